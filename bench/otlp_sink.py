#!/usr/bin/env python3
"""An OTLP/gRPC trace sink for benchmarks: accepts every export and counts
the bytes, so the server under test pays the whole export (batching,
encoding, the gRPC call) while the sink costs next to nothing.

    bench/otlp_sink.py PORT COUNT_FILE
"""
import sys
import threading
from concurrent import futures

import grpc

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
port, count_file = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
seen = {"exports": 0, "bytes": 0}


def export(request: bytes, _context) -> bytes:
    with lock:
        seen["exports"] += 1
        seen["bytes"] += len(request)
        with open(count_file, "w") as f:
            f.write(f"{seen['exports']} {seen['bytes']}\n")
    # An empty ExportTraceServiceResponse: every span accepted.
    return b""


handler = grpc.method_handlers_generic_handler(
    "opentelemetry.proto.collector.trace.v1.TraceService",
    {"Export": grpc.unary_unary_rpc_method_handler(export)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
server.wait_for_termination()
