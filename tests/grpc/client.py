"""A gRPC client for tests/grpc.rs, on Python's grpcio, with stubs generated from the shipped
proto/switchboard/v1/switchboard.proto at start (as any user would generate them).

    client.py ADDR COMMAND [ARGS]

Every call has a deadline; every answer is one JSON line on stdout, a failed call
`{"status": "UNAUTHENTICATED", "details": "..."}`. Credentials come from the environment:
SB_TOKEN (authorization: Bearer), SB_API_KEY (x-api-key), SB_NICK (x-nick); SB_CA (a PEM
file) makes the channel TLS, trusting that certificate for the name localhost.
"""

import atexit
import json
import os
import shutil
import sys
import tempfile

import grpc
from grpc_tools import protoc
from google.protobuf.json_format import MessageToDict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
PROTO = os.path.join(ROOT, "proto")


def stubs():
    out = tempfile.mkdtemp(prefix="sb-grpc-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    code = protoc.main([
        "protoc", f"-I{PROTO}", f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO, "switchboard", "v1", "switchboard.proto"),
    ])
    if code != 0:
        sys.exit(f"protoc failed: {code}")
    sys.path.insert(0, out)
    from switchboard.v1 import switchboard_pb2, switchboard_pb2_grpc
    return switchboard_pb2, switchboard_pb2_grpc


pb, rpc = stubs()


def metadata():
    md = []
    if os.environ.get("SB_TOKEN"):
        md.append(("authorization", "Bearer " + os.environ["SB_TOKEN"]))
    if os.environ.get("SB_API_KEY"):
        md.append(("x-api-key", os.environ["SB_API_KEY"]))
    if os.environ.get("SB_NICK"):
        md.append(("x-nick", os.environ["SB_NICK"]))
    return md


def say(value):
    print(json.dumps(value), flush=True)


def event(e):
    d = MessageToDict(e, preserving_proto_field_name=True)
    d["kind"] = pb.Event.Kind.Name(e.kind)
    return d


def failed(error):
    say({"status": error.code().name, "details": error.details()})


def main():
    addr, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    timeout = float(os.environ.get("SB_TIMEOUT", "10"))
    if os.environ.get("SB_CA"):
        with open(os.environ["SB_CA"], "rb") as ca:
            credentials = grpc.ssl_channel_credentials(ca.read())
        channel = grpc.secure_channel(addr, credentials,
                                      options=[("grpc.ssl_target_name_override", "localhost")])
    else:
        channel = grpc.insecure_channel(addr)
    stub = rpc.SwitchboardStub(channel)
    md = metadata()
    try:
        if command == "publish":
            room, text = args[0], args[1]
            key = args[2] if len(args) > 2 else ""
            reply = stub.Publish(pb.PublishRequest(room=room, text=text, key=key),
                                 timeout=timeout, metadata=md)
            say({"id": reply.id, "duplicate": reply.duplicate})
        elif command == "history":
            room, since, limit = args[0], args[1] if len(args) > 1 else "", int(args[2]) if len(args) > 2 else 0
            reply = stub.History(pb.HistoryRequest(room=room, since=since, limit=limit),
                                 timeout=timeout, metadata=md)
            say({"texts": [m.text for m in reply.messages], "ids": [m.id for m in reply.messages],
                 "from": [getattr(m, "from") for m in reply.messages],
                 "next": reply.next, "more": reply.more, "gap": reply.gap})
        elif command == "presence":
            reply = stub.Presence(pb.PresenceRequest(room=args[0]), timeout=timeout, metadata=md)
            say({"room": reply.room,
                 "members": [{"nick": m.nick, "transport": m.transport} for m in reply.members]})
        elif command == "rooms":
            limit = int(args[0]) if args else 0
            after = args[1] if len(args) > 1 else ""
            reply = stub.Rooms(pb.RoomsRequest(after=after, limit=limit), timeout=timeout, metadata=md)
            say({"rooms": [{"name": r.name, "members": r.members, "last_id": r.last_id}
                           for r in reply.rooms], "next": reply.next})
        elif command == "subscribe":
            # subscribe COUNT ROOM[=SINCE]...: prints events until COUNT messages came.
            count, rooms, since = int(args[0]), [], {}
            for arg in args[1:]:
                room, _, cursor = arg.partition("=")
                rooms.append(room)
                if cursor:
                    since[room] = cursor
            seen = 0
            for e in stub.Subscribe(pb.SubscribeRequest(rooms=rooms, since=since),
                                    timeout=timeout, metadata=md):
                say(event(e))
                if e.kind == pb.Event.KIND_MESSAGE:
                    seen += 1
                    if seen == count:
                        say({"status": "OK"})
                        return
            say({"status": "ENDED"})
        elif command == "stall":
            # stall ROOM SECONDS: reads the first event, sleeps, then reads to the end.
            import time
            calls = stub.Subscribe(pb.SubscribeRequest(rooms=[args[0]]), timeout=timeout, metadata=md)
            say(event(next(calls)))
            time.sleep(float(args[1]))
            messages = 0
            try:
                for e in calls:
                    messages += e.kind == pb.Event.KIND_MESSAGE
            except grpc.RpcError as error:
                say({"status": error.code().name, "details": error.details(), "messages": messages})
                return
            say({"status": "ENDED", "messages": messages})
        elif command == "chat":
            chat(stub, md, timeout, args)
        elif command == "reflect":
            reflect(channel, timeout)
        elif command == "health":
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args[0] if args else ""), timeout=timeout)
            say({"status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)})
        else:
            sys.exit(f"unknown command {command}")
    except grpc.RpcError as error:
        failed(error)


def chat(stub, md, timeout, args):
    """chat ROOM TEXT...: joins ROOM, publishes each TEXT (ref = its index), then reads until
    every ack and the room's echo of each text came; prints every event."""
    import queue
    room, texts = args[0], args[1:]
    outgoing = queue.Queue()
    outgoing.put(pb.ClientFrame(ref="j", join=pb.ClientFrame.Join(room=room)))
    outgoing.put(pb.ClientFrame(ref="x", publish=pb.ClientFrame.Publish(room="not-joined", text="no")))
    outgoing.put(pb.ClientFrame(ref="e"))

    def frames():
        while True:
            frame = outgoing.get()
            if frame is None:
                return
            yield frame

    calls = stub.Chat(frames(), timeout=timeout, metadata=md)
    acks, echoes = set(), set()
    try:
        for e in calls:
            say(event(e))
            if e.kind == pb.Event.KIND_JOINED:
                for i, text in enumerate(texts):
                    outgoing.put(pb.ClientFrame(ref=str(i), publish=pb.ClientFrame.Publish(text=text)))
            elif e.kind == pb.Event.KIND_ACK:
                acks.add(e.ref)
            elif e.kind == pb.Event.KIND_MESSAGE and e.room == room:
                echoes.add(e.text)
            if len(acks) == len(texts) and echoes >= set(texts):
                say({"status": "OK"})
                return
    finally:
        outgoing.put(None)
        calls.cancel()


def reflect(channel, timeout):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    services = []
    for reply in stub.ServerReflectionInfo(iter([request]), timeout=timeout):
        services.extend(s.name for s in reply.list_services_response.service)
    say({"services": services})


if __name__ == "__main__":
    main()
