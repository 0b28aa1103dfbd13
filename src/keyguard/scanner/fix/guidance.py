"""Exact instructions for keys in files ``keyguard fix`` does not rewrite itself."""

from __future__ import annotations

from pathlib import PurePosixPath

from keyguard.scanner.model import Finding

_JS = {".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".vue", ".svelte"}
_YAML = {".yml", ".yaml"}
_SHELL = {".sh", ".bash", ".zsh", ".ps1"}


def guidance(finding: Finding, env_name: str, env_file: str) -> str:
    """One instruction for one finding, naming the line and the variable to use."""
    path = PurePosixPath(finding.path)
    suffix, name = path.suffix.lower(), path.name
    at = f"{finding.path}:{finding.line}"
    if finding.encoding == "concatenated":
        at += " (the key is split over joined string literals: replace the whole expression)"
    stored = f"(the value is in {env_file} as {env_name})"
    if finding.cell is not None and finding.part == "output":
        return (
            f"{at}: cell {finding.cell} output shows the key: clear it "
            f"(`jupyter nbconvert --clear-output --inplace {finding.path}`, or Cell > "
            f"All Output > Clear, then save) and rotate the key"
        )
    if finding.encoding.startswith("base64"):
        return (
            f"{at}: the key is stored {finding.encoding}-encoded (a Kubernetes Secret's data:, a "
            f"CI variable): base64 is not encryption. Remove the encoded value from the file and "
            f"create it at deploy time from the environment (`kubectl create secret generic NAME "
            f"--from-env-file={env_file}`) or a secret manager, then rotate the key {stored}"
        )
    if suffix == ".ipynb":
        return (
            f"{at}: in cell {finding.cell or '?'}, replace the literal with "
            f'os.environ["{env_name}"] (add `import os`; load {env_file} with '
            f"`%load_ext dotenv` + `%dotenv`) {stored}"
        )
    if suffix in _JS:
        return (
            f"{at}: replace the literal with process.env.{env_name} (load {env_file} with "
            f"`node --env-file={env_file}` or dotenv); never ship an OpenAI key to a browser "
            f"bundle: use a keyguard virtual key or a server route {stored}"
        )
    if suffix in _YAML:
        return (
            f"{at}: replace the literal with a reference: ${{{env_name}}} (docker compose: "
            f"`env_file: {env_file}`), or ${{{{ secrets.{env_name} }}}} in GitHub Actions "
            f"{stored}"
        )
    if name.startswith(".env") or suffix == ".env":
        return (
            f"{at}: this is an env file: make sure it is listed in .gitignore and was never "
            f"committed (`git log --all -- {finding.path}`), then rotate the key"
        )
    if name == "Dockerfile" or suffix == ".dockerfile" or name.startswith("Dockerfile."):
        return (
            f"{at}: do not bake keys into images: delete the ENV/ARG line and pass the key at "
            f"run time (`docker run --env-file {env_file}`) or as a build secret "
            f"(`RUN --mount=type=secret,id={env_name.lower()}`) {stored}"
        )
    if suffix in _SHELL:
        return f'{at}: replace the literal with "${env_name}" and source {env_file} {stored}'
    if suffix in {".md", ".rst", ".txt", ".log"}:
        return (
            f"{at}: replace the key with a placeholder such as sk-... or <{env_name}> and rotate it"
        )
    if suffix in {".json", ".toml", ".ini", ".cfg", ".conf"}:
        return (
            f"{at}: remove the key from this config file and read {env_name} from the "
            f"environment in the code that loads it {stored}"
        )
    return f"{at}: replace the literal with a read of the {env_name} environment variable {stored}"
