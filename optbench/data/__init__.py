"""Datasets: CIFAR-10 (real and synthetic, one format and reader), FineWeb token shards."""
