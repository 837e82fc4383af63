"""Offline verification of Fabric anchors: a pinned trust file, blocks as evidence, no network."""
