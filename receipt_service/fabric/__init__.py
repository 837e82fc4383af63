"""Hyperledger Fabric: the Gateway client, and the no-Docker network for development and tests."""
