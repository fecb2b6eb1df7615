"""Typed errors, grouped by pipeline stage; each carries an actionable message and a process exit code."""

from __future__ import annotations


class TritonRepoError(Exception):
    """Base class. `str(error)` is the one line the CLI prints; `exit_code` is what the process returns."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        return f"{self.message}{' ' if self.message.endswith(('.', ':', '!', '?')) else '. '}{self.hint}"


# --- model source (tiny model, local directories, Hugging Face Hub) -------------------------------------------------
class ModelSourceError(TritonRepoError):
    exit_code = 2


class ModelNotFoundError(ModelSourceError):
    """The --model value is neither a known name, an existing directory, nor a Hub id that resolves."""


class ModelDownloadError(ModelSourceError):
    """The Hub download failed (network, authentication, disk)."""


class UnsupportedModelError(ModelSourceError):
    """The checkpoint exists but its architecture or files cannot be served by the chosen runtime."""


# --- planning and rendering ----------------------------------------------------------------------------------------
class PlanError(TritonRepoError):
    exit_code = 3


class RenderError(TritonRepoError):
    """A template could not be rendered (a missing variable, a template syntax error)."""

    exit_code = 3


class HardwareError(PlanError):
    """An unknown --gpu profile, or GPUs that cannot be planned for (mixed models)."""


class PlanDoesNotFitError(PlanError):
    """The model does not fit the hardware; the message has the numbers and the nearest plan that would."""


# --- engine build (TensorRT-LLM) -----------------------------------------------------------------------------------
class EngineBuildError(TritonRepoError):
    """Checkpoint conversion or trtllm-build failed; `log_path` has the full output."""

    exit_code = 7

    def __init__(self, message: str, *, log_path: str | None = None, hint: str | None = None) -> None:
        self.log_path = log_path
        super().__init__(message + (f" Full log: {log_path}" if log_path else ""), hint=hint)


class EngineMismatchError(TritonRepoError):
    """Engines built for another GPU, TensorRT-LLM version or world size than the one serving them."""

    exit_code = 5


# --- validation ----------------------------------------------------------------------------------------------------
class ValidationError(TritonRepoError):
    """A repository failed validation. `problems` lists every finding as 'file:line: message'."""

    exit_code = 4

    def __init__(self, problems: list[str], *, root: str = "", hint: str | None = None) -> None:
        self.problems = list(problems)
        where = f" in {root}" if root else ""
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}", hint=hint)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"  # after the list, on its own line


# --- serving -------------------------------------------------------------------------------------------------------
class ServerError(TritonRepoError):
    exit_code = 5


class ServerNotFoundError(ServerError):
    """No usable tritonserver binary."""


class ServerStartError(ServerError):
    """tritonserver exited or never became ready; `log_lines` holds Triton's own error lines."""

    def __init__(self, message: str, *, log_lines: list[str] | None = None, hint: str | None = None) -> None:
        self.log_lines = list(log_lines or [])
        detail = ("\n" + "\n".join(f"  {line}" for line in self.log_lines)) if self.log_lines else ""
        super().__init__(message + detail, hint=hint)


class PortInUseError(ServerError):
    """A port that tritonserver or the front end needs is already taken."""


# --- smoke checks --------------------------------------------------------------------------------------------------
class SmokeError(TritonRepoError):
    """At least one smoke check failed."""

    exit_code = 6


# --- object storage (push/pull to S3) ------------------------------------------------------------------------------
class StorageError(TritonRepoError):
    """An S3 transfer failed (a bad URL, an unreachable endpoint, a missing or unreadable remote manifest)."""

    exit_code = 8


class StorageAuthError(StorageError):
    """No credentials, or credentials the endpoint refused (wrong key, wrong secret, access denied)."""


class BucketNotFoundError(StorageError):
    """The bucket in the s3:// URL does not exist at that endpoint."""


class IntegrityError(StorageError):
    """A downloaded object's sha256 differs from the manifest; the bad file is removed, never renamed into place."""


class UnsafeKeyError(StorageError):
    """A remote key or manifest path that would land outside the target folder ('..', absolute, backslashes)."""


class UnsafeLinkError(StorageError):
    """A symbolic link in a repository leads outside it; push uploads nothing. `links` lists each one."""

    def __init__(self, message: str, *, links: list[dict], hint: str | None = None) -> None:
        self.links = list(links)
        super().__init__(message, hint=hint)


# --- benchmarking (`tritonrepo bench`) -----------------------------------------------------------------------------
class BenchError(TritonRepoError):
    """A benchmark could not run or finish (the load generator, the endpoint, the output folder)."""

    exit_code = 9


class BenchToolMissingError(BenchError):
    """aiperf (the load generator of the [bench] extra) is not installed."""


class EndpointUnreachableError(BenchError):
    """Nothing answers the OpenAI endpoint's /v1/models."""


class UnknownServedModelError(BenchError):
    """--model names a model the endpoint does not serve; the message lists those it does."""


class BenchRunError(BenchError):
    """aiperf failed at one concurrency level; the levels that finished are kept."""
