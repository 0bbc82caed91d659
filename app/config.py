"""The service's settings: one validated object, read once from flags and `VPT_*` variables.

Precedence: command-line flag > environment variable (VPT_<NAME>) > default. Nothing else in
app/ reads os.environ. Invalid values fail at start-up with a message naming the setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.registry import is_database_url

DEFAULT_DATA_DIR = Path("~/.cache/vpt")


class Settings(BaseSettings):
    """Every knob of `vpt-serve`; the CLI maps `--max-batch-size` to `max_batch_size` and so on."""

    model_config = SettingsConfigDict(env_prefix="VPT_", extra="forbid", validate_default=True)

    # model
    backbone: str = Field("ViT-B-16-quickgelu", description="open_clip model name or path to a JSON model config")
    weights: str = Field("openai", description="pretrained tag, local weights file, or 'none'")
    posterior: Path | None = Field(
        None, description="posterior artifact (.safetensors), served as the model named by its file stem"
    )
    models_dir: Path | None = Field(
        None,
        description="model repository: every <name>.safetensors, or <name>/ folder of versions (the newest "
        "serves), is a model over the one backbone; with neither this nor posterior: zero-shot CLIP",
    )
    default_model: str | None = Field(
        None, description="model answering when a request names none (default: posterior's, else the first name)"
    )
    models_poll_s: float = Field(
        2.0, ge=0, description="seconds between checks of the model files for new versions (0: reload by API only)"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    cache_dir: Path | None = Field(None, description="open_clip / Hugging Face weights cache")
    samples: int = Field(20, ge=1, description="Monte Carlo samples per image when a request gives none")
    max_samples: int = Field(20, ge=1, description="largest `samples` a request may ask for (size of the sample bank)")
    seed: int = Field(0, description="seed of the engine's residual bank (answers are reproducible)")
    cond_mode: Literal["exact", "linear"] = Field(
        "exact",
        description="vpt-cond text pass: exact (a pass per image and sample) or linear (class features "
        "linearised in the residual; used only while its measured error is within linear_tolerance)",
    )
    linear_tolerance: float = Field(
        1e-3, gt=0, description="largest max |dp| against the exact pass, on probe features, for the linear pass"
    )
    demo: bool = Field(False, description="serve the shapes demo model shipped in the package (builds nothing)")
    classes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="classes to register when the registry is new (default: the artifact's); "
        'comma-separated, or a JSON list for names with commas: \'["red, dark", "blue"]\'',
    )

    # batching and limits
    max_batch_size: int = Field(32, ge=1, description="images per forward pass")
    max_queue_delay_ms: float = Field(5.0, ge=0, description="how long a batch waits to fill up")
    max_queue: int = Field(256, ge=1, description="requests waiting for the model; more answer 503")
    request_timeout_s: float = Field(30.0, gt=0, description="longest time to answer, decoding included (503 after)")
    decode_threads: int = Field(2, ge=1, description="threads that decode and preprocess uploads")
    # 64: two full batches of the default size wait to be decoded, so a burst of 32-64 clients is served
    # (16 refused 46 of 64 concurrent uploads), while a flood of huge uploads is still refused early.
    max_decode_queue: int = Field(
        64, ge=0, description="uploads waiting for a decode thread; more answer 503 before any decoding"
    )
    max_image_bytes: int = Field(10 * 2**20, ge=1, description="largest upload in bytes (413 above)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest image in pixels (413 above)")
    max_image_aspect_ratio: float = Field(
        20.0, ge=1, description="largest long side / short side of an image (422 above; read from the header)"
    )
    max_names_per_call: int = Field(100, ge=1, description="class names per POST /classes")
    max_classes: int = Field(10_000, ge=1, description="registered classes per model")

    # storage, auth, network
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="where the demo unpacks its backbone; registry default")
    registry: Path | str | None = Field(
        None,
        description="registered classes: a SQLite file (default DATA_DIR/classes.sqlite), or a postgresql:// URL "
        "of a database several replicas share",
    )
    registry_poll_s: float = Field(
        5.0, gt=0, description="how often a replica re-reads the registry version (besides PostgreSQL's NOTIFY)"
    )
    token: SecretStr | None = Field(
        None,
        description="bearer token required by class changes (POST/DELETE .../classes) and model reloads "
        "(a --token flag shows in ps: prefer the file)",
    )
    token_file: Path | None = Field(None, description="file holding the bearer token (instead of --token)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        description="Host header values answered, comma-separated (e.g. 'localhost,127.0.0.1'; '*.example.com'); "
        "others get 400: set it when no token is set, against DNS rebinding",
    )
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0: any free port)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="largest request line + headers in bytes (400 and the connection closed above)"
    )
    request_read_timeout_s: float = Field(
        30.0, gt=0, description="a request (headers and body) must arrive within this time of its first byte"
    )
    keep_alive_timeout_s: int = Field(5, ge=1, description="idle keep-alive connections are closed after this time")

    # actionable uncertainty
    alpha: float = Field(
        0.1, gt=0, lt=1, description="prediction sets miss the true class at most this often (coverage 1 - alpha)"
    )
    uncertainty_measure: Literal["max_probability", "entropy", "mutual_information", "energy"] = Field(
        "entropy", description="unknown score for a posterior without calibration (calibrated ones bring their own)"
    )
    uncertainty_threshold: float = Field(
        1.5, description="unknown threshold for a posterior without calibration (nats for entropy / MI)"
    )

    @field_validator("classes", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """Accept a JSON list or a comma-separated string (flag or env var) as well as a list."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a valid JSON list: {exc}") from None
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("token", "token_file", "posterior", "cache_dir", "models_dir", "default_model", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """An empty variable (as compose writes for an unset ${VAR:-}) means "not set", not the current folder."""
        return None if value == "" else value

    @field_validator("registry", mode="before")
    @classmethod
    def _registry_spec(cls, value: object) -> object:
        """A database URL stays a string; anything else is a file path (empty: not set, as in _empty_is_none)."""
        if value is None or value == "" or isinstance(value, Path):
            return value or None
        return str(value) if is_database_url(str(value)) else Path(str(value))

    @field_validator("data_dir", "registry", "posterior", "cache_dir", "token_file", "models_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | str | None) -> Path | str | None:
        return value.expanduser() if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if "samples" not in self.model_fields_set:  # the default follows a smaller max_samples
            self.samples = min(self.samples, self.max_samples)
        if self.samples > self.max_samples:
            raise ValueError(f"samples ({self.samples}) must not exceed max_samples ({self.max_samples})")
        if self.token_file is not None:
            if self.token is not None:
                raise ValueError("give the token once: token or token_file, not both")
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read token_file {self.token_file}: {exc}") from None
            if not token:
                raise ValueError(f"token_file {self.token_file} is empty")
            self.token = SecretStr(token)
        return self

    @property
    def registry_path(self) -> Path | str:
        """The registry spec app.registry.open_registry takes: a SQLite file, or a postgresql:// URL."""
        return self.registry if self.registry is not None else self.data_dir / "classes.sqlite"

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1000.0


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit values (e.g. CLI flags) taking precedence."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
