#!/usr/bin/env python3
"""Lists a running gateway's services over server reflection with Python's
grpcio-reflection, which speaks only v1alpha, and resolves ParticipantService
with every file it imports.

    python reflection_check.py 127.0.0.1:50051 --tokens .hurtigspor-dev/dev-tokens.json

Plaintext only (a dev gateway). The bearer token is read from the dev
gateway's dev-tokens.json (entry `admin` unless --token-name says otherwise)
or from HURTIGSPOR_TOKEN, never from the command line. Exits 0 when
hurtigspor.v1.ParticipantService is listed and described, 1 when it is not,
2 when the gateway cannot be asked.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

REQUIRED = "hurtigspor.v1.ParticipantService"
EXPECTED = [
    REQUIRED,
    "hurtigspor.v1.SyncService",
    "hurtigspor.v1.ReportingService",
    "hurtigspor.v1.AuditService",
    "grpc.health.v1.Health",
]


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends `authorization: Bearer <token>` with every call: the
    reflection client of grpcio-reflection takes no metadata itself."""

    def __init__(self, token):
        self._metadata = (("authorization", "Bearer " + token),)

    def _with_token(self, details):
        metadata = list(details.metadata or ()) + list(self._metadata)
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def _token(args):
    if args.tokens:
        with open(args.tokens, encoding="utf-8") as f:
            tokens = json.load(f)
        if args.token_name not in tokens:
            print(f"reflection check: no token {args.token_name!r} in {args.tokens}", file=sys.stderr)
            sys.exit(2)
        return tokens[args.token_name]
    token = os.environ.get("HURTIGSPOR_TOKEN")
    if not token:
        print("reflection check: give --tokens <dev-tokens.json> or set HURTIGSPOR_TOKEN", file=sys.stderr)
        sys.exit(2)
    return token


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="host:port of a plaintext (dev) gateway")
    parser.add_argument("--tokens", help="the dev gateway's dev-tokens.json")
    parser.add_argument("--token-name", default="admin", help="which token of --tokens (default: admin)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway")
    args = parser.parse_args()
    token = _token(args)

    channel = grpc.insecure_channel(args.address)
    try:
        grpc.channel_ready_future(channel).result(timeout=args.timeout)
    except grpc.FutureTimeoutError:
        print(f"reflection check: no gateway answers at {args.address}", file=sys.stderr)
        return 2
    channel = grpc.intercept_channel(channel, _Bearer(token))
    database = ProtoReflectionDescriptorDatabase(channel)
    try:
        services = sorted(database.get_services())
    except grpc.RpcError as e:
        print(f"reflection check: listing services failed: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    print("services over reflection v1alpha:")
    for name in services:
        print(f"  {name}")
    missing = [name for name in EXPECTED if name not in services]
    if missing:
        print(f"reflection check: missing over v1alpha: {', '.join(missing)}", file=sys.stderr)
        return 1

    # What a client does next: the service's file and, through the pool, every
    # file it imports (hurtigspor's messages, google.type.Date, the
    # well-known types), each fetched by reflection.
    try:
        service = DescriptorPool(database).FindServiceByName(REQUIRED)
    except (KeyError, TypeError, grpc.RpcError) as e:
        print(f"reflection check: cannot describe {REQUIRED} over v1alpha: {e!r}", file=sys.stderr)
        return 1
    methods = [m.name for m in service.methods]
    if "GetParticipant" not in methods:
        print(f"reflection check: {REQUIRED} has no GetParticipant: {methods}", file=sys.stderr)
        return 1
    print(f"{REQUIRED}: {len(methods)} methods, from {service.file.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
