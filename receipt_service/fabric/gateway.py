"""A client for the Fabric peer Gateway (gRPC ``gateway.Gateway``): Evaluate, Endorse, Submit, CommitStatus;
and the peer's Deliver service for blocks.

It builds and signs proposals, transaction envelopes and commit-status requests exactly as
Fabric's own Gateway clients do (transaction id = SHA-256(nonce || creator), ECDSA P-256 with
low-S) on top of the ``fabric_protos`` bindings and ``grpcio``. Several gateway peers may be
given; a call that cannot reach one tries the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import chaincode_pb2, events_pb2_grpc, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from ..errors import ConfigError, ServiceError
from .identity import Identity

# gRPC codes after which another gateway peer may do better
_FAILOVER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class GatewayError(ServiceError):
    """A Gateway call failed; ``code`` is the gRPC status, the message includes each peer's reason."""

    status = 503
    title = "Fabric gateway error"

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class TransactionInvalidError(GatewayError):
    """The transaction was ordered but the peers marked it invalid (for example MVCC_READ_CONFLICT)."""


@dataclass(frozen=True)
class Endpoint:
    """One gateway peer: ``host:port`` with the PEM root its TLS certificate chains to."""

    address: str
    tls_root_cert: bytes
    server_name: str | None = None

    @classmethod
    def from_files(cls, address: str, tls_root_cert: Path, server_name: str | None = None) -> Endpoint:
        """An endpoint whose TLS root is read from a PEM file."""
        try:
            return cls(address, tls_root_cert.read_bytes(), server_name)
        except OSError as exc:
            raise ConfigError(f"fabric gateway {address}: cannot read {tls_root_cert}: {exc.strerror}") from None


@dataclass(frozen=True)
class Committed:
    """A transaction that the peers committed as valid."""

    tx_id: str
    block_number: int
    result: bytes


_NO_QUORUM = "insufficient number of orderers"  # the Gateway's BFT submit reached fewer orderers than a quorum
STALLED_WAIT_SECONDS = 20.0  # how long such a transaction may still be ordered before a retry sends another


class GatewayClient:
    """Signed calls to one network through any of its gateway peers."""

    def __init__(
        self,
        identity: Identity,
        endpoints: Sequence[Endpoint],
        *,
        endorse_timeout: float = 30.0,
        submit_timeout: float = 15.0,
        commit_timeout: float = 60.0,
        evaluate_timeout: float = 10.0,
    ) -> None:
        if not endpoints:
            raise ConfigError("fabric: at least one gateway endpoint is required")
        self.identity = identity
        self.endpoints = list(endpoints)
        self.stalled: dict[str, str] = {}  # channel -> why a submitted transaction waits for an ordering quorum
        self.timeouts = {
            "Endorse": endorse_timeout,
            "Submit": submit_timeout,
            "CommitStatus": commit_timeout,
            "Evaluate": evaluate_timeout,
        }
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._preferred = 0

    def _stub(self, endpoint: Endpoint) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self._channel(endpoint))

    def _channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint.address)
        if channel is None:
            options: list[tuple[str, object]] = [
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.max_receive_message_length", 100 * 1024 * 1024),
            ]
            if endpoint.server_name:
                options.append(("grpc.ssl_target_name_override", endpoint.server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=endpoint.tls_root_cert)
            channel = grpc.aio.secure_channel(endpoint.address, creds, options=options)
            self._channels[endpoint.address] = channel
        return channel

    async def _call(self, method: str, request: object, timeout: float | None = None) -> object:
        """Call ``method`` on the preferred peer, failing over to the others on connection errors."""
        failures = []
        n = len(self.endpoints)
        for i in range(n):
            k = (self._preferred + i) % n
            endpoint = self.endpoints[k]
            try:
                wait = self.timeouts[method] if timeout is None else timeout
                response = await getattr(self._stub(endpoint), method)(request, timeout=wait)
            except grpc.aio.AioRpcError as exc:
                failures.append((endpoint.address, exc))
                if exc.code() in _FAILOVER:
                    continue
                raise _error(method, failures) from None
            self._preferred = k
            return response
        raise _error(method, failures)

    # ------------------------------------------------------------------ proposals

    def _proposal(self, channel: str, chaincode: str, fn: str, args: Sequence[str]) -> tuple[str, bytes, bytes]:
        """(tx id, proposal bytes, signature) for an invocation."""
        ident = self.identity
        nonce = os.urandom(24)
        creator = ident.creator
        tx_id = ident.tx_id(nonce)
        now = time.time_ns()
        cc_id = chaincode_pb2.ChaincodeID(name=chaincode)
        channel_header = common_pb2.ChannelHeader(
            type=common_pb2.HeaderType.ENDORSER_TRANSACTION,
            timestamp=timestamp_pb2.Timestamp(seconds=now // 10**9, nanos=now % 10**9),
            channel_id=channel,
            tx_id=tx_id,
            epoch=0,
            extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=cc_id).SerializeToString(),
        )
        header = common_pb2.Header(
            channel_header=channel_header.SerializeToString(),
            signature_header=common_pb2.SignatureHeader(creator=creator, nonce=nonce).SerializeToString(),
        )
        spec = chaincode_pb2.ChaincodeSpec(
            type=chaincode_pb2.ChaincodeSpec.Type.GOLANG,
            chaincode_id=cc_id,
            input=chaincode_pb2.ChaincodeInput(args=[fn.encode(), *(a.encode() for a in args)]),
        )
        payload = proposal_pb2.ChaincodeProposalPayload(
            input=chaincode_pb2.ChaincodeInvocationSpec(chaincode_spec=spec).SerializeToString()
        )
        proposal = proposal_pb2.Proposal(
            header=header.SerializeToString(), payload=payload.SerializeToString()
        ).SerializeToString()
        return tx_id, proposal, ident.sign(proposal)

    async def evaluate(self, channel: str, chaincode: str, fn: str, args: Sequence[str] = ()) -> bytes:
        """Run a query on one peer (nothing is ordered); returns the chaincode's payload."""
        tx_id, proposal, signature = self._proposal(channel, chaincode, fn, args)
        request = gateway_pb2.EvaluateRequest(
            transaction_id=tx_id,
            channel_id=channel,
            proposed_transaction=proposal_pb2.SignedProposal(proposal_bytes=proposal, signature=signature),
        )
        response = await self._call("Evaluate", request)
        assert isinstance(response, gateway_pb2.EvaluateResponse)
        return bytes(response.result.payload)

    async def submit(
        self, channel: str, chaincode: str, fn: str, args: Sequence[str] = (), endorsing_orgs: Sequence[str] = ()
    ) -> Committed:
        """Endorse, sign, submit and wait for the commit; raises unless the transaction is valid.

        ``endorsing_orgs`` restricts endorsement to those MSP ids (by default the Gateway picks
        peers that satisfy the chaincode's endorsement policy)."""
        tx_id, envelope, result = await self.endorse(channel, chaincode, fn, args, endorsing_orgs)
        envelope.signature = self.identity.sign(envelope.payload)
        try:
            await self._call(
                "Submit",
                gateway_pb2.SubmitRequest(transaction_id=tx_id, channel_id=channel, prepared_transaction=envelope),
            )
        except GatewayError as exc:
            if _NO_QUORUM not in str(exc):
                raise
            # BFT without a quorum of orderers: the live ones may still hold the transaction and order it once
            # a quorum is back. Wait for it (up to the commit timeout) rather than let a retry send a second
            # transaction for the same write that would compete with it.
            self.stalled[channel] = str(exc)
            try:
                code, block = await self.commit_status(channel, tx_id, STALLED_WAIT_SECONDS)
            except GatewayError:
                raise exc from None
            finally:
                self.stalled.pop(channel, None)
        else:
            code, block = await self.commit_status(channel, tx_id)
        if code != transaction_pb2.TxValidationCode.VALID:
            name = transaction_pb2.TxValidationCode.Name(code)
            raise TransactionInvalidError(f"transaction {tx_id} on {channel} was committed invalid: {name}", name)
        await self._committed_elsewhere(channel, tx_id)
        return Committed(tx_id, block, result)

    async def _committed_elsewhere(self, channel: str, tx_id: str, timeout: float = 5.0) -> None:
        """Wait (briefly) until the other gateway peers committed the transaction too, so that the next
        proposal, endorsed by any of them, reads this write (under BFT a peer may take blocks a moment
        later than another). A peer that is down or slower than ``timeout`` is not waited for."""
        others = [e for k, e in enumerate(self.endpoints) if k != self._preferred]
        if not others:
            return
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=tx_id, channel_id=channel, identity=self.identity.creator
        ).SerializeToString()
        signed = gateway_pb2.SignedCommitStatusRequest(request=request, signature=self.identity.sign(request))

        async def one(endpoint: Endpoint) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stub(endpoint).CommitStatus(signed, timeout=timeout)

        await asyncio.gather(*(one(e) for e in others))

    async def endorse(
        self, channel: str, chaincode: str, fn: str, args: Sequence[str] = (), endorsing_orgs: Sequence[str] = ()
    ) -> tuple[str, common_pb2.Envelope, bytes]:
        """Collect endorsements: (tx id, the unsigned prepared envelope, the chaincode's result)."""
        tx_id, proposal, signature = self._proposal(channel, chaincode, fn, args)
        endorse = gateway_pb2.EndorseRequest(
            transaction_id=tx_id,
            channel_id=channel,
            proposed_transaction=proposal_pb2.SignedProposal(proposal_bytes=proposal, signature=signature),
            endorsing_organizations=list(endorsing_orgs),
        )
        endorsed = await self._call("Endorse", endorse)
        assert isinstance(endorsed, gateway_pb2.EndorseResponse)
        envelope = endorsed.prepared_transaction
        return tx_id, envelope, chaincode_result(envelope)

    async def commit_status(self, channel: str, tx_id: str, timeout: float | None = None) -> tuple[int, int]:
        """(validation code, block number) of a transaction; waits until the peer has committed it."""
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=tx_id, channel_id=channel, identity=self.identity.creator
        ).SerializeToString()
        signed = gateway_pb2.SignedCommitStatusRequest(request=request, signature=self.identity.sign(request))
        response = await self._call("CommitStatus", signed, timeout)
        assert isinstance(response, gateway_pb2.CommitStatusResponse)
        return int(response.result), int(response.block_number)

    async def fetch_block(self, channel: str, number: int) -> bytes:
        """Block ``number`` of ``channel`` as the peer stores it (every envelope, all metadata), via Deliver."""
        ident = self.identity
        nonce = os.urandom(24)
        now = time.time_ns()
        channel_header = common_pb2.ChannelHeader(
            type=common_pb2.HeaderType.DELIVER_SEEK_INFO,
            timestamp=timestamp_pb2.Timestamp(seconds=now // 10**9, nanos=now % 10**9),
            channel_id=channel,
            tx_id=ident.tx_id(nonce),
        )
        position = ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=number))
        seek = ab_pb2.SeekInfo(start=position, stop=position, behavior=ab_pb2.SeekInfo.SeekBehavior.FAIL_IF_NOT_READY)
        payload = common_pb2.Payload(
            header=common_pb2.Header(
                channel_header=channel_header.SerializeToString(),
                signature_header=common_pb2.SignatureHeader(creator=ident.creator, nonce=nonce).SerializeToString(),
            ),
            data=seek.SerializeToString(),
        ).SerializeToString()
        envelope = common_pb2.Envelope(payload=payload, signature=ident.sign(payload))
        failures = []
        for endpoint in [*self.endpoints[self._preferred :], *self.endpoints[: self._preferred]]:
            stub = events_pb2_grpc.DeliverStub(self._channel(endpoint))
            block = None
            try:
                async for response in stub.Deliver(iter([envelope]), timeout=self.timeouts["Evaluate"]):
                    if response.HasField("block"):
                        block = response.block.SerializeToString()
                    elif response.HasField("status"):
                        if response.status != common_pb2.Status.SUCCESS or block is None:
                            name = common_pb2.Status.Name(response.status)
                            raise GatewayError(
                                f"Deliver of block {number} on {channel} from {endpoint.address}: {name}"
                            )
                        return bytes(block)
            except grpc.aio.AioRpcError as exc:
                failures.append((endpoint.address, exc))
                continue
        raise _error("Deliver", failures)

    async def close(self) -> None:
        """Close every gRPC channel."""
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


def chaincode_result(envelope: common_pb2.Envelope) -> bytes:
    """The chaincode's response payload inside an endorsed (prepared) transaction."""
    payload = common_pb2.Payload.FromString(envelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    action = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(action.action.proposal_response_payload)
    return bytes(proposal_pb2.ChaincodeAction.FromString(prp.extension).response.payload)


def _error(method: str, failures: list[tuple[str, grpc.aio.AioRpcError]]) -> GatewayError:
    """One error naming every peer tried and, from the Gateway's error details, every endorser's reason."""
    if not failures:
        return GatewayError(f"{method}: no gateway peer answered")
    parts = []
    for address, exc in failures:
        text = f"{address}: {exc.code().name} {exc.details()}"
        reasons = [f"{d.msp_id}@{d.address}: {d.message}" for d in _details(exc)]
        if reasons:
            text += " (" + "; ".join(reasons) + ")"
        parts.append(text)
    return GatewayError(f"{method} failed: " + " | ".join(parts), failures[-1][1].code().name)


def _details(exc: grpc.aio.AioRpcError) -> list[gateway_pb2.ErrorDetail]:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            out = []
            for any_ in status.details:
                detail = gateway_pb2.ErrorDetail()
                if any_.Unpack(detail):
                    out.append(detail)
            return out
    return []
