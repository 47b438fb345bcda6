"""Deployments: where a tenant's model names are served, at what price, and in which order they are tried.

A deployment is one upstream endpoint for one model (provider, upstream model id, base URL, region,
sealed credentials, price). Clients ask for a *model name*; every deployment that serves that name is a
candidate. Candidates are grouped by `priority`: the lowest priority is tried first, with load spread
across its deployments; higher priorities are the fallbacks, tried in order when a whole tier failed.

All of a tenant's deployments live in ONE stream, `deployments-<tenant>`: loading the routing table is
one indexed read, and a configure or remove checks the whole table's version (no two writers can
configure the same name concurrently). The credentials are sealed by the application before they get
here (AES-GCM, see adapters/secrets.py); this module never sees a plaintext credential.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from domain.entra_certificate import EntraCertificate, InvalidCertificate, check_validity, load_certificate
from domain.pricing import Price

WIRE_OPENAI = "openai"  # the OpenAI chat-completions / embeddings protocol, spoken by many hosts
WIRE_ANTHROPIC = "anthropic"
WIRE_GEMINI = "gemini"
WIRE_BEDROCK = "bedrock"  # AWS Bedrock's Converse API, signed with SigV4 or a Bedrock API key


@dataclass(frozen=True)
class ProviderSpec:
    wire: str
    default_base_url: str | None  # None: the deployment must name its base URL
    stream_usage_option: bool = True  # accepts stream_options.include_usage
    embeddings: bool = True  # serves POST /v1/embeddings (in whatever shape its wire speaks)
    embeds_token_ids: bool = True  # embeddings of token arrays, not only of text
    auth: str = "bearer"  # the credential as `Authorization: Bearer ...`, or in an `api-key` header (Azure)
    base_url_query: str | None = None  # a query parameter the base URL must carry (Azure: api-version)
    regional: bool = False  # needs an AWS region: its requests are signed for it, its default URL names it
    needs_credential: bool = False  # without one, a library would fall back to the host's own (AWS's chain)
    entra_sign_in: bool = False  # the credential may be a Microsoft Entra ID app registration (Azure)


PROVIDERS: Mapping[str, ProviderSpec] = {
    "openai": ProviderSpec(WIRE_OPENAI, "https://api.openai.com/v1"),
    "deepseek": ProviderSpec(WIRE_OPENAI, "https://api.deepseek.com/v1"),
    # Mistral sends usage in its last chunk unasked and has refused unknown request fields.
    "mistral": ProviderSpec(WIRE_OPENAI, "https://api.mistral.ai/v1", stream_usage_option=False),
    "llama": ProviderSpec(WIRE_OPENAI, None),  # Meta Llama through any OpenAI-compatible host
    # Azure OpenAI: https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT?api-version=2024-10-21,
    # OpenAI's protocol under that deployment's path, the key in an `api-key` header.
    "azure": ProviderSpec(WIRE_OPENAI, None, auth="api-key", base_url_query="api-version", entra_sign_in=True),
    "openai_compatible": ProviderSpec(WIRE_OPENAI, None),  # vLLM, Ollama, llama.cpp server, ...
    "anthropic": ProviderSpec(WIRE_ANTHROPIC, "https://api.anthropic.com", embeddings=False),
    "gemini": ProviderSpec(WIRE_GEMINI, "https://generativelanguage.googleapis.com/v1beta", embeds_token_ids=False),
    # AWS Bedrock (Meta Llama, Mistral, Anthropic, Amazon Nova... by their Bedrock model ids): chat through
    # its Converse API, embeddings (Amazon Titan, Cohere Embed) through InvokeModel, text only.
    "bedrock": ProviderSpec(WIRE_BEDROCK, "https://bedrock-runtime.{region}.amazonaws.com", embeds_token_ids=False,
                            regional=True, needs_credential=True),
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")
_URL = re.compile(r"^https?://[^\s]+$")
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
_ENTRA_CLIENT = re.compile(r"^entra:(?P<directory>[A-Za-z0-9][A-Za-z0-9.-]{0,99}):(?P<client_id>[0-9a-fA-F-]{36}):"
                           r"(?P<secret>\S{1,512})$")
_ENTRA_CERTIFICATE = re.compile(r"^entra-cert:(?P<directory>[A-Za-z0-9][A-Za-z0-9.-]{0,99}):"
                                r"(?P<client_id>[0-9a-fA-F-]{36}):(?P<bundle>[A-Za-z0-9+/=]{1,32768})$")
_ENTRA_FORMS = ("entra:DIRECTORY:CLIENT_ID:CLIENT_SECRET (a directory id or domain, the app's client id, its"
                " secret), or entra-cert:DIRECTORY:CLIENT_ID:BUNDLE_BASE64 (its private key and certificate, PEM or PKCS#12)")
_AWS_KEY_PAIR = re.compile(r"^(?P<key_id>[A-Z0-9]{16,128}):(?P<secret>[^:\s]{16,256})(?::(?P<session_token>[^:\s]+))?$")


class DeploymentError(Exception):
    """A deployment command that cannot be carried out."""


class InvalidDeployment(DeploymentError, ValueError):
    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"deployment {field}: expected {expected}, got {value!r}")
        self.field = field


class UnknownDeployment(DeploymentError):
    def __init__(self, tenant_id: str, name: str) -> None:
        super().__init__(f"tenant {tenant_id!r} has no deployment {name!r}")


def deployments_stream(tenant_id: str) -> str:
    return f"deployments-{tenant_id}"


@dataclass(frozen=True)
class Deployment:
    name: str
    model_name: str  # what clients ask for
    provider: str
    model: str  # the upstream model id
    base_url: str
    region: str
    price: Price
    priority: int = 0
    timeout_ms: int | None = None  # one attempt's limit; None = the request's remaining time
    max_retries: int = 2  # retries of this deployment on 429/5xx before falling back
    credentials: Mapping[str, Any] | None = None  # a sealed envelope, never plaintext
    credential_facts: Mapping[str, Any] | None = None  # what may be shown about it (credential_facts())

    @property
    def wire(self) -> str:
        return PROVIDERS[self.provider].wire

    def public(self) -> dict[str, Any]:
        """Everything about the deployment that may be shown: no credentials, only whether there are any."""
        return {"name": self.name, "model_name": self.model_name, "provider": self.provider, "model": self.model,
                "base_url": self.base_url, "region": self.region, "priority": self.priority,
                "timeout_ms": self.timeout_ms, "max_retries": self.max_retries, "price": self.price.as_dict(),
                "has_credentials": self.credentials is not None,
                "credential_facts": dict(self.credential_facts) if self.credential_facts else None}

    def payload(self, tenant_id: str) -> dict[str, Any]:
        """The DeploymentConfigured payload: the public fields and the sealed credentials."""
        payload = self.public()
        del payload["has_credentials"]
        return {**payload, "tenant_id": tenant_id, "credentials": dict(self.credentials) if self.credentials else None}


def new_deployment(
    *, name: str, provider: str, model: str, price: Price, model_name: str | None = None, base_url: str | None = None,
    region: str = "", priority: int = 0, timeout_ms: int | None = None, max_retries: int = 2,
    credentials: Mapping[str, Any] | None = None, credential_facts: Mapping[str, Any] | None = None,
) -> Deployment:
    """Validate a deployment's fields and fill in the provider's default base URL."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidDeployment("name", name, f"a name matching {_NAME.pattern}")
    if provider not in PROVIDERS:
        raise InvalidDeployment("provider", provider, f"one of {sorted(PROVIDERS)}")
    if not isinstance(model, str) or not model.strip():
        raise InvalidDeployment("model", model, "the upstream model id")
    model_name = model_name or name
    if not _NAME.match(model_name):
        raise InvalidDeployment("model_name", model_name, f"a name matching {_NAME.pattern}")
    spec = PROVIDERS[provider]
    if spec.regional and not (isinstance(region, str) and _AWS_REGION.match(region)):
        raise InvalidDeployment("region", region, f"an AWS region such as us-east-1 (provider {provider} signs for it)")
    default_url = (spec.default_base_url or "").replace("{region}", region or "")
    path, separator, query = (base_url or default_url).partition("?")
    base_url = path.rstrip("/") + separator + query  # paths are appended before the query
    if not _URL.match(base_url):
        raise InvalidDeployment("base_url", base_url, f"an http(s) URL (provider {provider} has no default)")
    required = spec.base_url_query
    if required and not parse_qs(query).get(required):
        raise InvalidDeployment("base_url", base_url, f"a URL ending in ?{required}=... (provider {provider})")
    if not isinstance(priority, int) or not 0 <= priority < 100:
        raise InvalidDeployment("priority", priority, "an integer from 0 (first) to 99")
    if timeout_ms is not None and (not isinstance(timeout_ms, int) or timeout_ms <= 0):
        raise InvalidDeployment("timeout_ms", timeout_ms, "a positive number of milliseconds or nothing")
    if not isinstance(max_retries, int) or not 0 <= max_retries <= 10:
        raise InvalidDeployment("max_retries", max_retries, "an integer from 0 to 10")
    return Deployment(name, model_name, provider, model.strip(), base_url, region or "", price, priority,
                      timeout_ms, max_retries, credentials, credential_facts)


@dataclass(frozen=True)
class EntraClient:
    """An Azure OpenAI deployment's Microsoft Entra ID app registration: it gets bearer tokens with these."""

    directory: str  # the Entra tenant (directory) id, or its domain
    client_id: str
    secret: str = field(repr=False)  # never in a log line or a traceback; "" for a certificate
    certificate: EntraCertificate | None = None  # signs a client assertion instead of sending a secret


def is_entra_credential(credential: str | None) -> bool:
    """Written as an Entra ID app registration (well formed or not), not as an API key."""
    return bool(credential) and credential.startswith(("entra:", "entra-cert:"))  # type: ignore[union-attr]


def read_entra_client(credential: str) -> EntraClient:
    """The app registration of `entra:DIRECTORY:CLIENT_ID:CLIENT_SECRET` or
    `entra-cert:DIRECTORY:CLIENT_ID:BUNDLE_BASE64`; InvalidDeployment says what is wrong, never quoting it."""
    if credential.startswith("entra-cert:"):
        found = _ENTRA_CERTIFICATE.match(credential)
        if found is None:
            raise InvalidDeployment("api_key", "<hidden>", _ENTRA_FORMS)
        try:
            certificate = load_certificate(found["bundle"])
        except InvalidCertificate as exc:
            raise InvalidDeployment("api_key", "<hidden>", f"an Entra ID certificate credential: {exc}") from None
        return EntraClient(found["directory"], found["client_id"].lower(), "", certificate)
    found = _ENTRA_CLIENT.match(credential)
    if found is None:
        raise InvalidDeployment("api_key", "<hidden>", _ENTRA_FORMS)
    return EntraClient(found["directory"], found["client_id"].lower(), found["secret"])


def entra_client(credential: str | None) -> EntraClient | None:
    """The app registration a credential is written as, or None for an API key (or a malformed one)."""
    if not is_entra_credential(credential):
        return None
    try:
        return read_entra_client(credential)  # type: ignore[arg-type]
    except InvalidDeployment:
        return None


_ENTRA_CLOUDS = (  # (host suffix of the Azure OpenAI endpoint, Entra authority, token scope)
    (".azure.us", "https://login.microsoftonline.us", "https://cognitiveservices.azure.us/.default"),
    (".azure.cn", "https://login.chinacloudapi.cn", "https://cognitiveservices.azure.cn/.default"),
)
_ENTRA_PUBLIC = ("https://login.microsoftonline.com", "https://cognitiveservices.azure.com/.default")


def entra_endpoints(base_url: str) -> tuple[str, str]:
    """(authority, scope) of the Azure cloud a deployment's endpoint is in: public, US Government or China."""
    host = base_url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit(":", 1)[0].lower()
    for suffix, authority, scope in _ENTRA_CLOUDS:
        if host.endswith(suffix):
            return authority, scope
    return _ENTRA_PUBLIC


def check_credential(provider: str, credential: str | None, *, kept: bool) -> None:
    """Refuse a credential the provider cannot use, or none where one is needed (`kept`: one is recorded already).

    Bedrock takes a Bedrock API key (sent as a bearer token) or an IAM key pair written
    `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]` (requests signed with SigV4). It needs one: without
    it, AWS's libraries would sign with the host's own credentials (environment, profile, instance role),
    which no tenant may borrow. Azure takes an API key or an Entra ID app registration,
    `entra:DIRECTORY:CLIENT_ID:CLIENT_SECRET` or, with a certificate,
    `entra-cert:DIRECTORY:CLIENT_ID:BUNDLE_BASE64` (domain.entra_certificate), which must be valid now.
    """
    spec = PROVIDERS.get(provider)
    if spec is None:
        return
    if spec.entra_sign_in and is_entra_credential(credential):
        client = read_entra_client(credential)  # type: ignore[arg-type]
        if client.certificate is not None:
            try:
                check_validity(client.certificate, dt.datetime.now(dt.UTC))
            except InvalidCertificate as exc:
                raise InvalidDeployment("api_key", "<hidden>", f"an Entra ID certificate credential: {exc}") from None
    if not spec.needs_credential:
        return
    if credential is None:
        if not kept:
            raise InvalidDeployment("api_key", None, f"a credential (provider {provider} never uses the host's own)")
        return
    if ":" in credential and not _AWS_KEY_PAIR.match(credential):
        raise InvalidDeployment("api_key", "<hidden>", "a Bedrock API key, or ACCESS_KEY_ID:SECRET_ACCESS_KEY"
                                "[:SESSION_TOKEN]")


def aws_key_pair(credential: str) -> tuple[str, str, str | None] | None:
    """(access key id, secret access key, session token) if the credential is an IAM key pair, else None."""
    found = _AWS_KEY_PAIR.match(credential)
    return (found["key_id"], found["secret"], found["session_token"]) if found else None


def deployment_from_payload(p: Mapping[str, Any]) -> Deployment:
    return Deployment(p["name"], p["model_name"], p["provider"], p["model"], p["base_url"], p["region"],
                      Price.from_dict(p["price"]), p["priority"], p["timeout_ms"], p["max_retries"], p["credentials"],
                      p.get("credential_facts"))  # events recorded before the sixteenth session have none


def credential_facts(provider: str, credential: str) -> dict[str, Any]:
    """What may be shown and recorded in the clear about a (checked) credential: its kind, and the identifiers
    an operator needs to tell which one it is and when it must be rotated; never a secret. AWS calls an
    access key id an identifier, not a secret; an Entra directory and client id are the app's names; a
    certificate's thumbprint and validity are printed on it."""
    spec = PROVIDERS.get(provider)
    if spec is not None and spec.entra_sign_in and (client := entra_client(credential)) is not None:
        facts: dict[str, Any] = {"kind": "entra_secret", "directory": client.directory, "client_id": client.client_id}
        if client.certificate is not None:
            facts.update(kind="entra_certificate", certificate_thumbprint_s256=client.certificate.thumbprint_s256,
                         certificate_not_after=client.certificate.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return facts
    if provider == "bedrock":
        pair = aws_key_pair(credential)
        if pair is None:
            return {"kind": "bedrock_api_key"}
        return {"kind": "aws_key_pair", "access_key_id": pair[0], "session": pair[2] is not None}
    return {"kind": "api_key"}


def fold(stream: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Deployment]:
    """A tenant's current deployments by name, from its stream of (type, payload)."""
    table: dict[str, Deployment] = {}
    for event_type, payload in stream:
        if event_type == "DeploymentConfigured":
            table[payload["name"]] = deployment_from_payload(payload)
        elif event_type == "DeploymentRemoved":
            table.pop(payload["name"], None)
    return table


# --- recording: when a tenant's InferenceRequested is committed ------------------------------------

RECORDING_POLICY_CHANGED = "RecordingPolicyChanged"
STRICT = "strict"  # InferenceRequested committed before any upstream call: no call goes unrecorded
DEFERRED = "deferred"  # committed while the call is in flight, or with its outcome if that comes first
RECORDING_MODES = (DEFERRED, STRICT)


def recording_mode(stream: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """A tenant's recording mode, from its deployments stream: deferred unless the last change said otherwise."""
    mode = DEFERRED
    for event_type, payload in stream:
        if event_type == RECORDING_POLICY_CHANGED:
            mode = payload["mode"]
    return mode


def decide_recording(tenant_id: str, mode: object) -> dict[str, Any]:
    """The RecordingPolicyChanged payload (recorded also when it repeats the current mode: who said it, and when)."""
    if mode not in RECORDING_MODES:
        raise InvalidDeployment("recording mode", mode, f"one of {list(RECORDING_MODES)}")
    return {"tenant_id": tenant_id, "mode": mode}


def decide_remove(table: Mapping[str, Deployment], tenant_id: str, name: str) -> dict[str, Any]:
    if name not in table:
        raise UnknownDeployment(tenant_id, name)
    return {"tenant_id": tenant_id, "name": name}


# --- routing: pure decisions over a routing table --------------------------------------------------


def candidates(table: Mapping[str, Deployment], model_name: str) -> list[Deployment]:
    return [d for d in table.values() if d.model_name == model_name]


def attempt_order(deployments: Sequence[Deployment], in_flight: Mapping[str, int], turn: int) -> list[Deployment]:
    """Tiers by ascending priority; inside a tier, least busy first, ties broken round-robin by `turn`."""
    ordered: list[Deployment] = []
    for priority in sorted({d.priority for d in deployments}):
        tier = sorted((d for d in deployments if d.priority == priority), key=lambda d: d.name)
        shift = turn % len(tier)
        rotated = tier[shift:] + tier[:shift]
        ordered.extend(sorted(rotated, key=lambda d: in_flight.get(d.name, 0)))  # stable: rotation breaks ties
    return ordered


@dataclass(frozen=True)
class FailureKind:
    reason: str  # one of domain.inference.FAILURE_REASONS
    retry: bool  # worth another attempt at the same deployment (after a backoff)
    fall_back: bool  # worth trying the next deployment


TIMEOUT = FailureKind("timeout", retry=False, fall_back=True)
UNREACHABLE = FailureKind("upstream_error", retry=True, fall_back=True)
BROKEN_RESPONSE = FailureKind("upstream_error", retry=False, fall_back=True)
KEY_REVOKED = FailureKind("key_revoked", retry=False, fall_back=False)  # ours, not the upstream's: see Gateway


def classify_status(status: int) -> FailureKind:
    """What an upstream HTTP status means for the request: retry, fall back, or give the client the error."""
    if status == 429:
        return FailureKind("rate_limited", retry=True, fall_back=True)
    if status >= 500 or status == 408:  # includes Anthropic's 529 "overloaded"
        return FailureKind("upstream_error", retry=True, fall_back=True)
    if status in (401, 403):  # our credentials for this deployment; another one may work
        return FailureKind("auth", retry=False, fall_back=True)
    if status == 404:  # the upstream does not know the model: a deployment misconfiguration
        return FailureKind("upstream_error", retry=False, fall_back=True)
    return FailureKind("bad_request", retry=False, fall_back=False)  # the request itself is wrong


def backoff_s(retry_number: int, base_s: float, cap_s: float, retry_after_s: float | None = None) -> float:
    """Exponential backoff: base * 2**(n-1), capped; a provider's Retry-After wins when it is within the cap."""
    delay = min(cap_s, base_s * (2 ** (retry_number - 1)))
    if retry_after_s is not None and 0 <= retry_after_s <= cap_s:
        delay = max(delay, retry_after_s)
    return delay
