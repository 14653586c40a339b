"""`edgesort bundle verify|inspect|sign|keygen|pack`: check, read and sign model bundles.

edgesort bundle verify BUNDLE [--key PUB.pem ...] [--require-signature]
edgesort bundle inspect BUNDLE [--json]
edgesort bundle sign BUNDLE --key PRIVATE.pem
edgesort bundle keygen PREFIX            (writes PREFIX.key and PREFIX.pub)
edgesort bundle pack BUNDLE_DIR OUT.tar
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.errors import BundleError, EdgesortError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("bundle", help="verify, inspect and sign model bundles; make signing keys")
    sub = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    v = sub.add_parser("verify", help="check every file's size and sha256, and the signature")
    v.add_argument("bundle", type=Path, help="bundle directory or .tar")
    v.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB",
        help="trusted Ed25519 public key (PEM); repeat for several. A present signature is checked",
    )
    v.add_argument(
        "--require-signature",
        action="store_true",
        help="refuse an unsigned bundle (as a device with model.require_signature does)",
    )
    v.set_defaults(func=cmd_verify)

    i = sub.add_parser("inspect", help="print what the manifest says")
    i.add_argument("bundle", type=Path)
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    i.set_defaults(func=cmd_inspect)

    s = sub.add_parser("sign", help="write manifest.sig (Ed25519 over manifest.json) into a bundle directory")
    s.add_argument("bundle", type=Path, help="bundle directory")
    s.add_argument("--key", type=Path, required=True, metavar="PRIVATE", help="Ed25519 private key (PEM)")
    s.set_defaults(func=cmd_sign)

    k = sub.add_parser("keygen", help="make an Ed25519 key pair: PREFIX.key (private) and PREFIX.pub")
    k.add_argument("prefix", type=Path)
    k.set_defaults(func=cmd_keygen)

    pk = sub.add_parser("pack", help="write a .tar of a (verified) bundle directory")
    pk.add_argument("bundle", type=Path)
    pk.add_argument("out", type=Path)
    pk.set_defaults(func=cmd_pack)


def cmd_verify(args: argparse.Namespace) -> int:
    from device.bundle import verify_bundle

    if args.require_signature and not args.key:
        raise BundleError("--require-signature needs at least one --key PUB to check the signature against")
    bundle = verify_bundle(args.bundle, require_signature=args.require_signature, trusted_keys=args.key)
    m = bundle.manifest
    if bundle.signed and args.key:
        sig = "signature valid"
    elif bundle.signed:
        sig = "signed (signature not checked: no --key)"
    else:
        sig = "unsigned"
    print(f"OK {args.bundle}: {m.model_id()}, {len(m.files)} file(s) match their sha256, {sig}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from device.bundle import read_bundle

    bundle = read_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True))
        return 0
    inp = m.input
    more = " ..." if len(m.labels) > 12 else ""
    lines = [
        f"bundle     {bundle.root}",
        f"model      {m.model_id()}  (format {m.format_version})",
        f"task       {m.task}, {len(m.labels)} labels: {', '.join(m.labels[:12])}{more}",
        f"input      {inp.name} {list(inp.shape)} {inp.dtype} {inp.color_order}, resize {inp.resize}, "
        f"scale {inp.scale:.6g}, mean {list(inp.mean)}, std {list(inp.std)}",
    ]
    lines += [f"output     {o.name} {list(o.shape)} ({o.meaning})" for o in m.outputs]
    lines += [f"file       {name}  {e.size} bytes  sha256 {e.sha256[:16]}..." for name, e in sorted(m.files.items())]
    if m.metrics:
        top1 = m.metrics.get("top1")
        lines.append(f"metrics    top1 {top1}" + (f" on {m.metrics.get('split')}" if m.metrics.get("split") else ""))
    if m.dataset:
        lines.append(f"dataset    {m.dataset.get('spec', '')} {m.dataset.get('counts', '')}")
    for key, rep in sorted(m.parity.items()):
        if isinstance(rep, dict) and "max_abs_diff" in rep:
            lines.append(
                f"parity     {key}: max abs diff {rep['max_abs_diff']:.2e}, top-1 agreement "
                f"{100 * rep['top1_agreement']:.1f}% on {rep['images']} images ({rep['source']})"
            )
        elif isinstance(rep, dict) and key == "accuracy_gate":
            lines.append(f"gate       {rep.get('summary', rep)}")
    lines.append(f"recipe     {m.recipe.command or '-'} @ {m.recipe.git_revision[:12] or '-'} {m.recipe.created}")
    lines.append(f"signed     {'yes (manifest.sig)' if bundle.signed else 'no'}")
    print("\n".join(lines))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from device.bundle import verify_bundle
    from device.signing import sign_bundle

    if not args.bundle.is_dir():
        raise BundleError(f"{args.bundle}: sign a bundle directory (unpack a .tar first, then `bundle pack`)")
    bundle = verify_bundle(args.bundle)  # never sign files that no longer match their manifest
    out = sign_bundle(bundle.root, args.key)
    print(f"signed {bundle.manifest.model_id()}: {out}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from device.signing import generate_keypair

    private = args.prefix.with_name(args.prefix.name + ".key")
    public = args.prefix.with_name(args.prefix.name + ".pub")
    for p in (private, public):
        if p.exists():
            raise EdgesortError(f"{p} already exists; refusing to overwrite a key")
    private.parent.mkdir(parents=True, exist_ok=True)
    generate_keypair(private, public)
    print(
        f"private key {private} (keep it on the workstation, mode 600)\npublic key  {public} "
        f"(list it under model.trusted_keys on the device)"
    )
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from device.bundle import pack_bundle, verify_bundle

    if not args.bundle.is_dir():
        raise BundleError(f"{args.bundle} is not a bundle directory")
    verify_bundle(args.bundle)
    pack_bundle(args.bundle, args.out)
    print(f"packed {args.bundle} -> {args.out}")
    return 0
