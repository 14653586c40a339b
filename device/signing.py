"""Ed25519 signatures over manifest.json (bundles) and over fleet commands, using `cryptography`.

Keys are files: a private key as PEM (PKCS8, unencrypted) for the workstation, public keys as PEM
(SubjectPublicKeyInfo) for the device. `edgesort bundle keygen` makes a pair.
"""

from __future__ import annotations

from pathlib import Path

from device.contract import MANIFEST_NAME, SIGNATURE_NAME
from device.errors import BundleError, EdgesortError


class SignatureError(EdgesortError):
    exit_code = 65


def _crypto():
    from device.errors import require

    return require(
        "cryptography.hazmat.primitives.asymmetric.ed25519", "Ed25519 signatures", "pip install cryptography"
    )


def generate_keypair(private_path: Path, public_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ed = _crypto()
    key = ed.Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization

    ed = _crypto()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path):
    from cryptography.hazmat.primitives import serialization

    ed = _crypto()
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, ed.Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return key


def sign_bytes(data: bytes, private_key_path: Path) -> bytes:
    return bytes(load_private_key(private_key_path).sign(data))


def verify_bytes(data: bytes, signature: bytes, public_key_paths: list[Path]) -> Path:
    """Return the path of the key that verifies `signature`, or raise SignatureError."""
    from cryptography.exceptions import InvalidSignature

    if not public_key_paths:
        raise SignatureError("no trusted public key is configured to check the signature")
    for p in public_key_paths:
        try:
            load_public_key(p).verify(signature, data)
            return p
        except InvalidSignature:
            continue
    raise SignatureError("the signature does not match any trusted key")


def sign_bundle(bundle_dir: Path, private_key_path: Path) -> Path:
    """Write manifest.sig: a raw 64-byte Ed25519 signature over the exact bytes of manifest.json."""
    sig = sign_bytes((bundle_dir / MANIFEST_NAME).read_bytes(), private_key_path)
    out = bundle_dir / SIGNATURE_NAME
    out.write_bytes(sig)
    return out


def verify_manifest_signature(bundle_dir: Path, public_key_paths: list[Path]) -> Path:
    sig_path = bundle_dir / SIGNATURE_NAME
    if not sig_path.is_file():
        raise BundleError(f"{bundle_dir}: the bundle is unsigned and this device requires signatures")
    try:
        return verify_bytes((bundle_dir / MANIFEST_NAME).read_bytes(), sig_path.read_bytes(), public_key_paths)
    except SignatureError as exc:
        raise BundleError(f"{bundle_dir}: manifest.sig rejected: {exc}") from exc
