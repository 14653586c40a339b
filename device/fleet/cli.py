"""`edgesort fleet watch|cmd`: watch the devices on a broker, and send one of them a command.

    edgesort fleet watch --broker mqtt://broker:1883
    edgesort fleet cmd line-3 pause --broker mqtt://broker:1883
    edgesort fleet cmd farm/line-3 set_config sorting.confidence_floor=0.7 --key ops.key --broker mqtts://...
    edgesort fleet cmd line-3 snapshot -o belt.jpg --broker mqtt://broker:1883
"""
# Registration stays light: paho and the rest are imported inside the handlers.

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from device.errors import ConfigError, EdgesortError

CONNECT_TIMEOUT_S = 10.0  # a broker that has not answered CONNECT by then is reported as unreachable
REPORTED_WAIT_S = 2.0  # how long `cmd set_config` listens for the retained config/reported to pick a version


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fleet",
        help="watch devices over MQTT and send them commands",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)

    w = sub.add_parser("watch", help="a live table of devices: status, fps, counts per grade, alarms")
    _broker_args(w)
    w.add_argument("--site", default="+", help="only this site (default: all)")
    w.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    w.add_argument(
        "--once", action="store_true", help="print the table once at the end instead of a live view"
    )
    w.set_defaults(func=_watch)

    c = sub.add_parser("cmd", help="send a command to one device and print its result")
    c.add_argument("device", help="DEVICE or SITE/DEVICE")
    c.add_argument("verb", choices=["pause", "resume", "set_config", "snapshot"])
    c.add_argument("args", nargs="*", help="set_config: dotted.key=value pairs (values in YAML syntax)")
    _broker_args(c)
    c.add_argument("--site", default="default", help="site of the device (default: default)")
    c.add_argument("--key", type=Path, help="Ed25519 private key (PEM) to sign with; set_config needs one")
    c.add_argument("--file", type=Path, help="set_config: a YAML file with the partial config")
    c.add_argument(
        "--version", type=int, help="set_config: config version (default: the device's highest + 1)"
    )
    c.add_argument(
        "--desired",
        action="store_true",
        help="set_config: publish as the retained config/desired instead of a one-off command",
    )
    c.add_argument("--ttl", type=float, default=60.0, help="seconds until the command expires (max 3600)")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the result")
    c.add_argument("-o", "--output", type=Path, help="snapshot: where to write the JPEG")
    c.set_defaults(func=_cmd)


def _broker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--ca", type=Path, help="CA certificate (PEM) that signed the broker's certificate")
    p.add_argument("--cert", type=Path, help="client certificate (PEM)")
    p.add_argument("--client-key", type=Path, help="client certificate key (PEM)")
    p.add_argument("--username-file", type=Path)
    p.add_argument("--password-file", type=Path)


def connect(args: argparse.Namespace) -> Any:
    """A connected paho MQTT 5 client with its network thread running, or one clear error."""
    import paho.mqtt.client as mqtt

    from device.config import MqttConfig
    from device.fleet.credentials import load_credentials
    from device.fleet.reporter import no_delay

    mcfg = MqttConfig.model_validate(
        {
            "url": args.broker,
            "ca_file": args.ca,
            "cert_file": args.cert,
            "key_file": args.client_key,
            "username_file": args.username_file,
            "password_file": args.password_file,
        }
    )
    address, creds = load_credentials(mcfg)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"edgesort-cli-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if creds.tls is not None:
        client.tls_set_context(creds.tls)
    if creds.username is not None:
        client.username_pw_set(creds.username, creds.password)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome["reason"] = reason
        done.set()

    client.on_connect = on_connect
    client.on_socket_open = no_delay
    try:
        client.connect(address.host, address.port, keepalive=30)
    except OSError as exc:
        raise EdgesortError(f"cannot reach the broker {args.broker}: {exc}") from exc
    client.loop_start()
    if not done.wait(CONNECT_TIMEOUT_S):
        client.loop_stop()
        raise EdgesortError(f"the broker {args.broker} did not answer within {CONNECT_TIMEOUT_S:.0f} s")
    if outcome["reason"].is_failure:
        client.loop_stop()
        raise EdgesortError(f"the broker {args.broker} refused the connection: {outcome['reason'].getName()}")
    return client


def _watch(args: argparse.Namespace) -> int:
    from device.fleet.watch import watch

    client = connect(args)
    try:
        watch(client, site=args.site, duration=args.duration, live=not args.once)
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


def _parse_assignments(pairs: list[str]) -> dict[str, Any]:
    import yaml

    doc: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{pair!r}: write set_config arguments as dotted.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{pair!r}: the value is not valid YAML") from exc
        node = doc
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{pair!r}: {part} is set both as a value and as a section")
        node[parts[-1]] = value
    return doc


def _set_config_args(args: argparse.Namespace, client: Any, base: str) -> dict[str, Any]:
    import yaml

    from device.fleet.commands import merge_config

    doc: dict[str, Any] = {}
    if args.file is not None:
        try:
            loaded = yaml.safe_load(args.file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {args.file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.file}: must hold a mapping of config sections")
        doc = loaded
    doc = merge_config(doc, _parse_assignments(args.args))
    if not doc:
        raise ConfigError("set_config needs dotted.key=value arguments or --file")
    version = args.version
    if version is None:
        reported = _wait_message(client, f"{base}/config/reported", REPORTED_WAIT_S)
        high = int(reported.get("version_high", reported.get("version", 0))) if reported else 0
        version = high + 1 if reported else int(time.time())
    return {"version": version, "config": doc}


def _wait_message(client: Any, topic: str, timeout: float, match: Any = None) -> dict[str, Any] | None:
    got: dict[str, Any] = {}
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and (match is None or match(doc, msg)):
            got.update(doc)
            done.set()

    client.message_callback_add(topic, on_message)
    client.subscribe(topic, qos=1)
    done.wait(timeout)
    client.message_callback_remove(topic)
    client.unsubscribe(topic)
    return got or None


def _cmd(args: argparse.Namespace) -> int:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from device.fleet import topics
    from device.fleet.commands import make_command

    site, _, device = args.device.rpartition("/")
    t = topics.DeviceTopics(site or args.site, device)
    if args.verb != "set_config" and (args.args or args.file or args.desired or args.version):
        raise ConfigError(f"{args.verb} takes no arguments")
    if args.verb == "set_config" and args.key is None:
        raise ConfigError("set_config must be signed: give --key PRIVATE_KEY.pem")
    client = connect(args)
    try:
        cmd_args = _set_config_args(args, client, t.base) if args.verb == "set_config" else {}
        payload, cmd_id = make_command(args.verb, t.site, t.device, cmd_args, key=args.key, ttl_s=args.ttl)
        if args.desired:
            client.publish(t.config_desired, payload, qos=1, retain=True).wait_for_publish(args.timeout)
            reported = _wait_message(
                client, t.config_reported, args.timeout, match=lambda doc, _m: doc.get("last_id") == cmd_id
            )
            if reported is None:
                raise EdgesortError(
                    f"{t.site}/{t.device} reported nothing on config {cmd_id} within "
                    f"{args.timeout:.0f} s (it applies config/desired when it next connects)"
                )
            print(json.dumps(reported, indent=2))
            return 0 if reported.get("ok") else 1
        reply_topic = t.result(uuid.uuid4().hex)
        correlation = cmd_id.encode()
        result: dict[str, Any] = {}
        done = threading.Event()

        def on_result(_c: Any, _u: Any, msg: Any) -> None:
            if getattr(msg.properties, "CorrelationData", None) == correlation:
                try:
                    result.update(json.loads(msg.payload))
                except ValueError:
                    result.update({"ok": False, "reasons": ["the device answered with something not JSON"]})
                done.set()

        client.message_callback_add(reply_topic, on_result)
        client.subscribe(reply_topic, qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = correlation
        client.publish(t.cmd(args.verb), payload, qos=1, properties=props).wait_for_publish(args.timeout)
        if not done.wait(args.timeout):
            raise EdgesortError(
                f"no answer from {t.site}/{t.device} within {args.timeout:.0f} s "
                f"(is it online? `edgesort fleet watch --broker {args.broker}`)"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return _print_result(args, result)


def _print_result(args: argparse.Namespace, result: dict[str, Any]) -> int:
    import base64

    res = result.get("result") or {}
    if args.verb == "snapshot" and result.get("ok") and "jpeg_b64" in res:
        jpeg = base64.b64decode(res.pop("jpeg_b64"))
        out = args.output or Path(f"snapshot-{int(time.time())}.jpg")
        out.write_bytes(jpeg)
        res["written"] = str(out)
    print(json.dumps(result, indent=2))
    if not result.get("ok"):
        print(f"edgesort fleet cmd: refused: {'; '.join(result.get('reasons', []))}", file=sys.stderr)
        return 1
    return 0
