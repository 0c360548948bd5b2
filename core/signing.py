"""Optional Ed25519 signatures of model files, for teams that share models.

A signed model file holds one more member, ``signature.json``::

    {"format": "smdownscale-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "<16 hex>", "signer": "<free text>", "signed": "<UTC ISO time>",
     "manifest_sha256": "<hex>", "signature": "<base64 Ed25519 signature>"}

The signature covers the canonical JSON of every field but ``signature``, and so the digest of
``manifest.json``, which lists the sha256 of every learner member: changing any byte that
changes a prediction or a reported number breaks it. ``key_id`` is the first 16 hex digits of
the sha256 of the raw 32-byte public key.

Keys are PEM files: the private key PKCS#8 (written readable by its owner only), the public key
SubjectPublicKeyInfo (an OpenSSH ``ssh-ed25519`` public key line is accepted too). "Trusted
keys" are public key files, or folders whose ``*.pub`` / ``*.pem`` files are public keys.

Needs the ``cryptography`` package (Debian: python3-cryptography) only when keys are made,
models signed, or signatures verified; everything else works without it.
"""
import base64
import datetime as _dt
import hashlib
import json
import os
import zipfile

from .common import SmdError
from .outputs import atomic_output, check_outputs

SIGNATURE_FORMAT = "smdownscale-signature"
SIGNATURE_VERSION = 1
_FIELDS = ("format", "version", "algorithm", "key_id", "signer", "signed", "manifest_sha256", "signature")
PUBLIC_KEY_EXTENSIONS = (".pub", ".pem")
_MAX_KEY_BYTES = 64 * 1024


def _crypto():
    """The cryptography modules used here; SmdError saying how to install the package."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:
        raise SmdError(
            "Signing and checking model signatures needs the Python package 'cryptography', which "
            f"is not installed ({err}). Install it (Debian/Ubuntu: apt install python3-cryptography; "
            "elsewhere: python -m pip install cryptography) and restart QGIS.") from err
    return serialization, ed25519, InvalidSignature


def key_id(public_key):
    """16 hex digits identifying an Ed25519 public key (sha256 of its raw bytes)."""
    serialization, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path, what):
    try:
        size = os.path.getsize(path)
        if size > _MAX_KEY_BYTES:
            raise SmdError(f"{what} {path!r} is {size} bytes, too large for a key file.")
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError as err:
        raise SmdError(f"{what} {path!r} does not exist.") from err
    except OSError as err:
        raise SmdError(f"Cannot read {what.lower()} {path!r}: {err}.") from err


def load_private_key(path):
    """The Ed25519 private key of a PEM file written by :func:`generate_key_pair`."""
    serialization, ed25519, _ = _crypto()
    data = _read_key_file(path, "Private key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SmdError(f"{path!r} is not an unencrypted PEM private key; use the private key written by "
                       "Generate model signing keys.") from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SmdError(f"{path!r} is not an Ed25519 private key; use Generate model signing keys.")
    return key


def load_public_key(path):
    """The Ed25519 public key of a PEM (or OpenSSH ``ssh-ed25519``) file."""
    serialization, ed25519, _ = _crypto()
    data = _read_key_file(path, "Public key file")
    try:
        if data.lstrip().startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        what = "a private key" if b"PRIVATE KEY" in data else "not a PEM public key"
        raise SmdError(f"{path!r} is {what}. Trusted keys must be public key files written by Generate "
                       "model signing keys (the .pub file, never the private key).") from err
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SmdError(f"{path!r} is not an Ed25519 public key.")
    return key


def _is_private_key_file(path):
    try:
        with open(path, "rb") as stream:
            return b"PRIVATE KEY" in stream.read(_MAX_KEY_BYTES)
    except OSError:
        return False


def trusted_key_files(trusted_keys):
    """Public key files of ``trusted_keys`` (files, or folders of ``*.pub``/``*.pem`` files)."""
    if isinstance(trusted_keys, (str, os.PathLike)):
        trusted_keys = [trusted_keys]
    files = []
    for entry in trusted_keys or ():
        entry = os.fspath(entry).strip() if entry is not None else ""
        if not entry:
            continue
        if os.path.isdir(entry):
            # a private key kept beside the public ones is skipped, never trusted or read as one
            files += sorted(path for path in (os.path.join(entry, name) for name in os.listdir(entry)
                                              if name.lower().endswith(PUBLIC_KEY_EXTENSIONS))
                            if os.path.isfile(path) and not _is_private_key_file(path))
        elif os.path.isfile(entry):
            files.append(entry)
        else:
            raise SmdError(f"Trusted key {entry!r} is neither a public key file nor a folder of them.")
    return files


def load_trusted_keys(trusted_keys):
    """dict key id -> (public key, file) of every trusted public key."""
    keys = {}
    for path in trusted_key_files(trusted_keys):
        key = load_public_key(path)
        keys.setdefault(key_id(key), (key, path))
    return keys


def generate_key_pair(private_path, public_path):
    """Write a new Ed25519 key pair; returns its key id.

    The private key (PEM PKCS#8, unencrypted, mode 0600) signs models: keep it secret. The
    public key (PEM) is what others put among their trusted keys. An existing private key file
    is never overwritten.
    """
    serialization, ed25519, _ = _crypto()
    private_path, public_path = os.fspath(private_path), os.fspath(public_path)
    if os.path.abspath(private_path) == os.path.abspath(public_path):
        raise SmdError("The private and the public key need two different files.")
    check_outputs([(private_path, "key"), (public_path, "key")])
    if os.path.exists(private_path):
        raise SmdError(f"{private_path!r} already exists; choose a new file for the private key "
                       "(an existing key is never overwritten: models signed with it would become "
                       "unverifiable).")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    with atomic_output(private_path) as tmp:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(private_pem)
    with atomic_output(public_path) as tmp:
        with open(tmp, "wb") as stream:
            stream.write(public_pem)
    return key_id(key.public_key())


def _payload_bytes(payload):
    fields = {k: payload[k] for k in _FIELDS if k != "signature"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _parse_signature(data, label):
    from .modelfile import _HEX64, _parse_json

    signature = _parse_json(data, label, "signature.json")
    if not (isinstance(signature, dict) and set(signature) == set(_FIELDS)
            and signature["format"] == SIGNATURE_FORMAT and type(signature["version"]) is int
            and signature["version"] == SIGNATURE_VERSION
            and signature["algorithm"] == "ed25519"
            and all(isinstance(signature[k], str) for k in _FIELDS if k != "version")
            and len(signature["key_id"]) == 16 and _HEX64.fullmatch(signature["manifest_sha256"])):
        raise SmdError(f"Model file {label!r}: signature.json is invalid; the file is damaged or was "
                       "modified. Use the original signed model file.")
    return signature


def signature_status(signature_bytes, manifest_digest, label, *, require_signed=False, trusted_keys=()):
    """Check the signature member of a model file (called by :func:`.modelfile.read_verified`).

    Returns
    -------
    dict
        ``status``: "unsigned", "signed" (not checked: no trusted keys given), "untrusted"
        (signed by a key that is not among the trusted keys) or "trusted" (valid signature by
        a trusted key); ``key_id``, ``signer``, ``signed``, ``key_file`` (trusted key file).

    Raises
    ------
    SmdError
        A signature that does not match the manifest or fails verification with its trusted
        key (always); with ``require_signed``, an unsigned or untrusted model or no trusted keys.
    """
    if signature_bytes is None:
        if require_signed:
            raise SmdError(
                f"Model file {label!r} is not signed, and signed models are required (REQUIRE_SIGNED). "
                "Ask whoever trained it for a copy signed with their key (Sign model file), or switch "
                "the requirement off if you trust where the file came from.")
        return {"status": "unsigned", "key_id": None, "signer": None, "signed": None, "key_file": None}
    signature = _parse_signature(signature_bytes, label)
    info = {"status": "signed", "key_id": signature["key_id"], "signer": signature["signer"] or None,
            "signed": signature["signed"], "key_file": None}
    if signature["manifest_sha256"] != manifest_digest:
        raise SmdError(f"Model file {label!r}: its signature is for another manifest; the file was "
                       "modified after signing. Use the original signed model file.")
    if not require_signed and not trusted_key_files(trusted_keys):
        return info
    keys = load_trusted_keys(trusted_keys)
    if require_signed and not keys:
        raise SmdError("Signed models are required (REQUIRE_SIGNED) but no trusted public key was given. "
                       "Set TRUSTED_KEYS (or the setting smdownscale/trusted_keys) to the public key file, "
                       "or a folder of them, of the people whose models you accept.")
    trusted = keys.get(signature["key_id"])
    if trusted is None:
        if require_signed:
            raise SmdError(
                f"Model file {label!r} is signed by key {signature['key_id']}"
                + (f" ({signature['signer']})" if signature["signer"] else "")
                + ", which is not among the trusted keys. Add that signer's public key to the trusted "
                  "keys if you trust them, or use a model signed by a trusted key.")
        info["status"] = "untrusted"
        return info
    _, _, invalid_signature = _crypto()
    try:
        raw = base64.b64decode(signature["signature"].encode("ascii"), validate=True)
        trusted[0].verify(raw, _payload_bytes(signature))
    except (invalid_signature, ValueError, TypeError) as err:
        raise SmdError(f"Model file {label!r}: the signature by trusted key {signature['key_id']} is "
                       "not valid; the file was modified after signing. Use the original signed model "
                       "file.") from err
    info.update(status="trusted", key_file=trusted[1])
    return info


def verify_signature(path, trusted_keys=()):
    """The signature status of a verified model file (see :func:`signature_status`).

    Every integrity check of the model file runs first (not the learner loading).
    """
    from .modelfile import read_verified

    return read_verified(path, trusted_keys=trusted_keys)[2]


def sign_model(model_path, private_key_path, output_path, *, signer=""):
    """Write a signed copy of a verified model file; returns the signature info.

    The copy has the same members plus ``signature.json`` (an existing signature is replaced).
    ``output_path`` must differ from ``model_path`` and the key (inputs are never overwritten).
    """
    from . import modelfile

    check_outputs([(output_path, "model")], inputs=[model_path, private_key_path])

    key = load_private_key(private_key_path)
    if not isinstance(signer, str) or len(signer) > 200:
        raise SmdError("The signer name must be a text of at most 200 characters.")
    # the whole model is checked first: a damaged model is never signed
    modelfile.read_verified(model_path)
    archive = modelfile.open_archive(model_path)
    with archive:
        infos = modelfile.check_directory(archive, str(model_path))
        members = {name: modelfile.read_member(archive, info, str(model_path))
                   for name, info in infos.items() if name != modelfile.SIGNATURE}
    digest = hashlib.sha256(members[modelfile.MANIFEST]).hexdigest()
    payload = {"format": SIGNATURE_FORMAT, "version": SIGNATURE_VERSION, "algorithm": "ed25519",
               "key_id": key_id(key.public_key()), "signer": signer.strip(),
               "signed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "manifest_sha256": digest}
    payload["signature"] = base64.b64encode(key.sign(_payload_bytes(payload))).decode("ascii")
    members[modelfile.SIGNATURE] = json.dumps(payload, indent=1).encode("utf-8")
    order = [modelfile.MANIFEST, modelfile.MANIFEST_DIGEST, modelfile.SIGNATURE]
    with atomic_output(output_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for name in order + sorted(n for n in members if n not in order):
                out.writestr(name, members[name])
    return {"status": "signed", "key_id": payload["key_id"], "signer": payload["signer"] or None,
            "signed": payload["signed"], "output": output_path}
