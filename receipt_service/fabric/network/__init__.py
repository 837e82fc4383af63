"""A Fabric network of plain processes on 127.0.0.1, no Docker: ``receipt-service fabric up|status|env|down``.

Four SmartBFT orderers, each of its own organisation (``--consensus raft``: three Raft orderers of the
org ``Orderer``), one peer each for ``Hospitals`` and ``Insurers``, the three
domain channels joined through the channel participation API, and the ``anchor`` chaincode run as
one external chaincode server, committed on every channel with ``AND('HospitalsMSP.peer',
'InsurersMSP.peer')``. TLS is on everywhere, mutual between the peers and the chaincode server.
Every step checks before it acts, so ``up`` on a running network only checks it and ``up`` after
``down`` (or after a node died) restarts what is missing with the same crypto and ledgers.
"""

from __future__ import annotations

from .binaries import BUILDER_DIR, CACHE, CHAINCODE_SRC, INSTALL_SCRIPT, REPO, chaincode_binary, fabric_home
from .channels import configtx
from .crypto import crypto_config, issue_tls_pair
from .layout import (
    BATCH_TIMEOUT,
    CHAINCODE,
    CHAINCODE_VERSION,
    CHANNELS,
    DEFAULT_BASE_PORT,
    DOMAIN,
    ENDORSEMENT_POLICY,
    ENDORSEMENT_POLICY_REF,
    ORDERERS,
    PEER_ORGS,
    Layout,
    NetworkError,
    NetworkStatus,
    Node,
    NodeStatus,
    Progress,
    ephemeral_ports,
    free_base_port,
)
from .layout import _port_open as _port_open
from .layout import _quiet as _quiet
from .lifecycle import _retry as _retry
from .lifecycle import chaincode_package, package_id
from .network import Network, iter_env_lines
from .processes import _reap as _reap

__all__ = [
    "BATCH_TIMEOUT",
    "BUILDER_DIR",
    "CACHE",
    "CHAINCODE",
    "CHAINCODE_SRC",
    "CHAINCODE_VERSION",
    "CHANNELS",
    "DEFAULT_BASE_PORT",
    "DOMAIN",
    "ENDORSEMENT_POLICY",
    "ENDORSEMENT_POLICY_REF",
    "INSTALL_SCRIPT",
    "Layout",
    "Network",
    "NetworkError",
    "NetworkStatus",
    "Node",
    "NodeStatus",
    "ORDERERS",
    "PEER_ORGS",
    "Progress",
    "REPO",
    "chaincode_binary",
    "chaincode_package",
    "configtx",
    "crypto_config",
    "ephemeral_ports",
    "fabric_home",
    "free_base_port",
    "issue_tls_pair",
    "iter_env_lines",
    "package_id",
]
