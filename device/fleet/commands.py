"""Remote commands: read, check, run, answer. A refused command is answered with its reasons and logged;
nothing a sender puts in a message can stop the reporter.

    cmd/<verb> or config/desired ─▶ on_message (paho thread) ─▶ bounded queue ─▶ worker thread:
        size ▶ JSON envelope ▶ body ▶ verb/site/device match ▶ Ed25519 signature ▶ expiry
        ▶ replay (persisted ids) ▶ run on the CommandHandler
        ▶ CommandResult on the response topic (+ correlation data) ▶ config/reported

Signatures are over the exact UTF-8 bytes of `body` (a JSON text inside the envelope), so no canonical JSON is
needed. set_config (anything that changes the config or the model) must be signed by a key in
mqtt.command_keys; pause/resume/snapshot may go unsigned unless mqtt.require_signed_commands is set, but a
signature that is present must verify.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from device.config import DeviceConfig
from device.fleet import topics
from device.fleet.payloads import (
    MAX_COMMAND_BYTES,
    CommandBody,
    CommandEnvelope,
    CommandResult,
    ConfigReported,
    SetConfigArgs,
    dumps,
)
from device.signing import SignatureError, sign_bytes, verify_bytes

log = logging.getLogger("edgesort.fleet.commands")

SIGNED_VERBS = frozenset({"set_config"})  # verbs that change the config or the model
MAX_TTL_S = 3600.0  # a command may live at most an hour, which bounds the replay cache
CLOCK_SKEW_S = 300.0  # device and sender clocks may differ by this much (NTP-less boxes drift)
MAX_REMEMBERED = 20_000  # replay-cache rows; past this, new commands are refused until old ones expire
QUEUE_SIZE = 32  # commands waiting for the worker; more at once are refused as "busy"
# Settings a remote command may not change: they decide who the device trusts and where it talks.
PROTECTED = (("mqtt",), ("paths",), ("model", "trusted_keys"), ("model", "require_signature"))


class CommandHandler(Protocol):
    """What the daemon does for each verb.

    set_config gets the whole validated config (a JSON-able dict) and returns the reasons it cannot apply it
    (empty list = applied). snapshot returns a JPEG of the latest frame."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def set_config(self, doc: dict[str, Any]) -> list[str]: ...
    def snapshot(self) -> bytes: ...


class RefusedError(Exception):
    def __init__(self, *reasons: str, quiet: bool = False) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)
        self.quiet = quiet  # a retained config/desired seen again: expected, not worth a warning


# -- sender side (edgesort fleet cmd, tests) -------------------------------------------------------


def make_command(
    verb: str,
    site: str,
    device: str,
    args: dict[str, Any] | None = None,
    *,
    key: Path | None = None,
    ttl_s: float = 60.0,
    now: float | None = None,
    command_id: str | None = None,
) -> tuple[bytes, str]:
    """Build a command payload (envelope JSON), signed when a private key is given. Returns (payload, id)."""
    t = time.time() if now is None else now
    body = CommandBody(
        verb=verb,
        site=site,
        device=device,
        id=command_id or uuid.uuid4().hex,
        issued=t,
        expires=t + ttl_s,
        args=args or {},
    )
    text = dumps(body).decode()
    sig = base64.b64encode(sign_bytes(text.encode(), key)).decode() if key is not None else None
    return dumps(CommandEnvelope(body=text, sig=sig)), body.id


# -- device side -----------------------------------------------------------------------------------


class ReplayGuard:
    """Command ids seen (kept until they expire) in the device's state database: a restart reopens none."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS commands_seen (id TEXT PRIMARY KEY, expires REAL NOT NULL)"
        )
        self._lock = threading.Lock()

    def first_use(self, command_id: str, expires: float, now: float) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM commands_seen WHERE expires < ?", (now - CLOCK_SKEW_S,))
            if self._db.execute("SELECT 1 FROM commands_seen WHERE id=?", (command_id,)).fetchone():
                return False
            (n,) = self._db.execute("SELECT COUNT(*) FROM commands_seen").fetchone()
            if n >= MAX_REMEMBERED:
                raise RefusedError(
                    f"more than {MAX_REMEMBERED} commands are still unexpired; try again later"
                )
            self._db.execute("INSERT INTO commands_seen(id, expires) VALUES (?, ?)", (command_id, expires))
            return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


def merge_config(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a partial config into the current one: mappings merge, anything else replaces."""
    out = copy.deepcopy(current)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _touches(patch: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = patch
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _pydantic_reasons(exc: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(x) for x in e['loc']) or '(top level)'}: "
        f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
        for e in exc.errors()
    ]


@dataclass
class Incoming:
    topic: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


Reply = Callable[[str, bytes, bytes | None], None]  # (topic, payload, correlation data)


class CommandProcessor:
    """Checks and runs commands on a worker thread; answers through `reply`, reports config via `report`."""

    def __init__(
        self,
        cfg: DeviceConfig,
        handler: CommandHandler | None,
        *,
        reply: Reply,
        report: Callable[[bytes], None],
        state: Any,  # device.fleet.outbox.Outbox: persisted config version
        replay: ReplayGuard,
    ) -> None:
        self.topics = topics.DeviceTopics(cfg.device.site, cfg.device.id)
        self.handler = handler
        self.keys = list(cfg.mqtt.command_keys)
        self.require_signed = cfg.mqtt.require_signed_commands
        self._reply = reply
        self._report = report
        self._state = state
        self._replay = replay
        self.accepted = 0
        self.refused = 0
        self._queue: queue.Queue[Incoming | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._config = cfg.model_dump(mode="json")
        saved = state.get_meta("config_doc")
        self.high_version = state.meta_int("config_version")  # highest version ever applied (monotonic)
        self.version = self.high_version if saved and json.loads(saved) == self._config else 0
        self._last: dict[str, Any] = {"last_id": None, "last_version": None, "ok": True, "reasons": []}

    # -- lifecycle --

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleet-commands", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def submit(self, msg: Incoming) -> None:
        """Called on paho's network thread: never blocks, never raises."""
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self.refused += 1
            log.warning("refused command on %s: %d commands already waiting", msg.topic, QUEUE_SIZE)
            self._answer(msg, self._result(msg, None, [f"busy: {QUEUE_SIZE} commands are already waiting"]))

    def _run(self) -> None:
        while (msg := self._queue.get()) is not None:
            try:
                self.process(msg)
            except Exception:  # the worker must outlive any single command
                log.exception("command on %s failed unexpectedly", msg.topic)

    # -- one command --

    def _verb_of(self, topic: str) -> str:
        if topic == self.topics.config_desired:
            return "set_config"
        return topic.rsplit("/", 1)[-1]

    def _result(
        self,
        msg: Incoming,
        body: CommandBody | None,
        reasons: list[str],
        result: dict[str, Any] | None = None,
    ) -> CommandResult:
        return CommandResult(
            ok=not reasons,
            verb=self._verb_of(msg.topic)[:64],
            id=None if body is None else body.id,
            device=self.topics.device,
            site=self.topics.site,
            ts=time.time(),
            reasons=reasons,
            result=result or {},
        )

    def process(self, msg: Incoming, now: float | None = None) -> CommandResult:
        desired = msg.topic == self.topics.config_desired
        body: CommandBody | None = None
        try:
            body = self._check(msg, time.time() if now is None else now)
            result = self._run_verb(body, desired)
        except RefusedError as exc:
            res = self._result(msg, body, exc.reasons)
            if exc.quiet:
                log.debug("config/desired not applied: %s", exc)
                return res
            self.refused += 1
            log.warning("refused command on %s (id %s): %s", msg.topic, res.id, "; ".join(exc.reasons))
            if not desired:
                self._answer(msg, res)
            return res
        res = self._result(msg, body, [], result)
        self.accepted += 1
        log.info("command %s (id %s) done", res.verb, res.id)
        if not desired:
            self._answer(msg, res)
        return res

    def _reply_topic_ok(self, rt: str) -> bool:
        return rt.startswith(self.topics.result_prefix) and not any(c in rt for c in "+#")

    def _answer(self, msg: Incoming, res: CommandResult) -> None:
        rt = msg.response_topic
        if rt is None or not self._reply_topic_ok(rt):
            rt = self.topics.result(res.verb if res.verb in topics.VERBS else "unknown")
        try:
            self._reply(rt, dumps(res), msg.correlation)
        except Exception:  # a reply that cannot go out is logged; the command outcome stands
            log.exception("could not publish the result of %s", res.verb)

    def _check(self, msg: Incoming, now: float) -> CommandBody:
        verb = self._verb_of(msg.topic)
        rt = msg.response_topic
        if rt is not None and not self._reply_topic_ok(rt):  # else a sender picks where the device publishes
            raise RefusedError(f"response topic {rt[:200]!r} is not under {self.topics.result_prefix}")
        if verb not in topics.VERBS:
            raise RefusedError(f"unknown verb {verb[:64]!r}; known: {', '.join(topics.VERBS)}")
        if len(msg.payload) > MAX_COMMAND_BYTES:
            raise RefusedError(
                f"payload of {len(msg.payload)} bytes is over the {MAX_COMMAND_BYTES}-byte limit"
            )
        try:
            env = CommandEnvelope.model_validate_json(msg.payload)
        except ValidationError as exc:
            raise RefusedError("malformed envelope: " + "; ".join(_pydantic_reasons(exc))[:500]) from None
        try:
            body = CommandBody.model_validate_json(env.body)
        except ValidationError as exc:
            raise RefusedError("malformed body: " + "; ".join(_pydantic_reasons(exc))[:500]) from None
        if body.verb != verb:
            raise RefusedError(f"body verb {body.verb[:64]!r} does not match the topic verb {verb!r}")
        if (body.site, body.device) != (self.topics.site, self.topics.device):
            raise RefusedError(f"addressed to {body.site}/{body.device}, not to this device")
        if env.sig is not None:
            try:
                sig = base64.b64decode(env.sig, validate=True)
            except (binascii.Error, ValueError):
                raise RefusedError("signature is not valid base64") from None
            try:
                verify_bytes(env.body.encode(), sig, self.keys)
            except SignatureError as exc:
                raise RefusedError(f"signature refused: {exc}") from None
        elif verb in SIGNED_VERBS or self.require_signed:
            raise RefusedError(f"{verb} must be signed with a key in mqtt.command_keys")
        if now > body.expires:
            raise RefusedError(
                f"expired {now - body.expires:.0f} s ago", quiet=msg.topic == self.topics.config_desired
            )
        if body.issued > now + CLOCK_SKEW_S:
            raise RefusedError("issued in the future (check the sender's clock)")
        if body.expires - body.issued > MAX_TTL_S or body.expires > now + MAX_TTL_S + CLOCK_SKEW_S:
            raise RefusedError(f"lifetime over {MAX_TTL_S:.0f} s")
        if not self._replay.first_use(body.id, body.expires, now):
            raise RefusedError(
                f"replayed: command id {body.id} was already used",
                quiet=msg.topic == self.topics.config_desired,
            )
        return body

    def _run_verb(self, body: CommandBody, desired: bool) -> dict[str, Any]:
        if body.verb != "set_config" and body.args:
            raise RefusedError(f"{body.verb} takes no arguments")
        if self.handler is None:
            raise RefusedError("this device runs without a command handler")
        h = self.handler
        try:
            if body.verb == "pause":
                h.pause()
            elif body.verb == "resume":
                h.resume()
            elif body.verb == "snapshot":
                jpeg = h.snapshot()
                if not isinstance(jpeg, bytes | bytearray) or not jpeg.startswith(b"\xff\xd8"):
                    raise RefusedError("the snapshot is not a JPEG")
                return {"jpeg_b64": base64.b64encode(jpeg).decode(), "bytes": len(jpeg)}
            elif body.verb == "set_config":
                return self._set_config(body, desired)
        except RefusedError:
            raise
        except Exception as exc:
            log.exception("%s failed in the handler", body.verb)
            raise RefusedError(f"{body.verb} failed on the device: {exc}"[:500]) from None
        return {}

    def _set_config(self, body: CommandBody, desired: bool) -> dict[str, Any]:
        try:
            args = SetConfigArgs.model_validate(body.args)
        except ValidationError as exc:
            raise RefusedError(*[f"args.{r}" for r in _pydantic_reasons(exc)]) from None
        if args.version <= self.high_version:
            raise RefusedError(f"version {args.version} is not newer than {self.high_version}", quiet=desired)
        reasons = [
            f"{'.'.join(p)} can only be changed in the device's own config file"
            for p in PROTECTED
            if _touches(args.config, p)
        ]
        doc: dict[str, Any] = {}
        if not reasons:
            try:
                doc = DeviceConfig.model_validate(merge_config(self._config, args.config)).model_dump(
                    mode="json"
                )
            except ValidationError as exc:
                reasons = _pydantic_reasons(exc)
        if not reasons:
            handler_reasons = self.handler.set_config(doc) if self.handler is not None else ["no handler"]
            if not isinstance(handler_reasons, list):
                raise TypeError("CommandHandler.set_config must return a list of reasons")
            reasons = [str(r) for r in handler_reasons]
        self._last = {"last_id": body.id, "last_version": args.version, "ok": not reasons, "reasons": reasons}
        if not reasons:
            self._config, self.version, self.high_version = doc, args.version, args.version
            self._state.set_meta("config_doc", json.dumps(doc, sort_keys=True))
            self._state.set_meta("config_version", str(args.version))
        self.publish_reported()
        if reasons:
            raise RefusedError(*reasons)
        return {"version": args.version}

    def reported(self) -> ConfigReported:
        return ConfigReported(
            ts=time.time(),
            device=self.topics.device,
            site=self.topics.site,
            version=self.version,
            version_high=self.high_version,
            config=self._config,
            **self._last,
        )

    def publish_reported(self) -> None:
        try:
            self._report(dumps(self.reported()))
        except Exception:
            log.exception("could not publish config/reported")
