"""Checkpoint converters: Swin key layouts (mmdet 2.x / 3.x / timm) and reference publishing."""
