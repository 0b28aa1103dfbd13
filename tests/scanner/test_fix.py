"""keyguard fix on real files: Python rewritten (and still compiles), values in .env (0600),
.gitignore updated, comments kept, other files get guidance, the key is never lost."""

from __future__ import annotations

import json
import os
import stat

import pytest

from keyguard.domain.secret import Secret
from keyguard.scanner.fix import fixer as fixer_mod
from keyguard.scanner.fix.fixer import fix_findings
from keyguard.scanner.fix.pyrewrite import rewrite_python
from scanner.gitutil import git
from scanner.keygen import openai_key, virtual_key

APP = '''"""My app."""
from __future__ import annotations

# the client
import openai  # keep this comment
from openai import OpenAI

openai.api_key = "{k1}"  # old style
client = OpenAI(
    api_key='{k2}',   # aligned comment
    timeout=30,
)
fallback = os.environ.get("MY_OPENAI_KEY", "{k3}")
CONFIG = {{"api_key": "{k1}", "model": "gpt-4o"}}
'''


def _dotenv(path):
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


@pytest.fixture
def project(repo, rng):
    keys = {"k1": openai_key(rng), "k2": openai_key(rng, "user"), "k3": openai_key(rng, "svcacct")}
    (repo / "app.py").write_text(APP.format(**keys))
    (repo / "web.js").write_text(f"const k = '{keys['k2']}';\n")
    return repo, keys


def _findings(scanner, root):
    from keyguard.scanner.walk import list_files

    return scanner.scan_files(root, list_files(root)).findings


def test_fix_rewrites_python_and_stores_values(project, scanner):
    root, keys = project
    result = fix_findings(root, _findings(scanner, root))
    code = (root / "app.py").read_text()
    compile(code, "app.py", "exec")
    for key in keys.values():
        assert key not in code
    assert "# keep this comment" in code and "# old style" in code and "# aligned comment" in code
    assert 'openai.api_key = os.environ["OPENAI_API_KEY"]' in code
    assert 'api_key=os.environ["OPENAI_API_KEY_2"],' in code
    assert 'fallback = os.environ["MY_OPENAI_KEY"]' in code
    assert '{"api_key": os.environ["OPENAI_API_KEY"], "model": "gpt-4o"}' in code
    assert code.index("import os") > code.index("from __future__")
    env = root / ".env"
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o600
    assert _dotenv(env) == {
        "OPENAI_API_KEY": keys["k1"],
        "OPENAI_API_KEY_2": keys["k2"],
        "MY_OPENAI_KEY": keys["k3"],
    }
    assert ".env" in (root / ".gitignore").read_text().splitlines()
    assert git(root, "check-ignore", ".env") == ".env"
    assert result.gitignore_updated
    # the JS file is not rewritten but gets exact guidance naming the variable
    [js] = [f for f in result.files if f.path == "web.js"]
    assert "process.env.OPENAI_API_KEY_2" in js.guidance[0]
    assert keys["k2"] in (root / "web.js").read_text()


def test_fix_never_reuses_a_name_with_another_value(project, scanner, rng):
    root, keys = project
    other = openai_key(rng)
    (root / ".env").write_text(f"# mine\nOPENAI_API_KEY={other}")  # no final newline
    os.chmod(root / ".env", 0o644)
    fix_findings(root, _findings(scanner, root))
    values = _dotenv(root / ".env")
    assert values["OPENAI_API_KEY"] == other
    assert keys["k1"] in values.values() and len(set(values)) == len(values)
    assert stat.S_IMODE(os.stat(root / ".env").st_mode) == 0o600
    # running again stores nothing new and changes nothing
    before = (root / ".env").read_text()
    fix_findings(root, _findings(scanner, root))
    assert (root / ".env").read_text() == before


def test_dry_run_writes_nothing_and_redacts_the_diff(project, scanner):
    root, keys = project
    original = (root / "app.py").read_text()
    result = fix_findings(root, _findings(scanner, root), dry_run=True)
    assert (root / "app.py").read_text() == original
    assert not (root / ".env").exists() and not (root / ".gitignore").exists()
    [app] = [f for f in result.files if f.path == "app.py"]
    assert app.diff.startswith("--- a/app.py") and "+openai.api_key = os.environ[" in app.diff
    everything = app.diff + "\n".join(result.planned_env_lines)
    for key in keys.values():
        assert key not in everything


def test_value_is_stored_before_the_source_changes(project, scanner, monkeypatch):
    root, keys = project
    original = (root / "app.py").read_text()

    def boom(path, text):
        raise OSError("disk full")

    monkeypatch.setattr(fixer_mod, "atomic_write", boom)
    with pytest.raises(OSError):
        fix_findings(root, _findings(scanner, root))
    assert (root / "app.py").read_text() == original
    assert keys["k1"] in _dotenv(root / ".env").values()


def test_to_vault_sink_gets_values_instead_of_dotenv(project, scanner):
    root, keys = project

    class Sink:
        def __init__(self):
            self.stored = {}

        def store(self, name, secret):
            assert isinstance(secret, Secret)
            self.stored[name] = secret.reveal()
            return f"{name} -> vault"

    sink = Sink()
    result = fix_findings(root, _findings(scanner, root), sink=sink)
    assert set(sink.stored.values()) == set(keys.values())
    assert not (root / ".env").exists()
    assert "OPENAI_API_KEY -> vault" in result.stored


def test_unfixable_python_shapes_get_guidance(rng):
    key = openai_key(rng)
    src = (
        f'h = f"Bearer {key}"\nb = b"{key}"\nlong = "Bearer {key}"\n# old: {key}\n'
        f'x = ("{key}" "suffix")\nos.environ["OPENAI_API_KEY"] = "{key}"\n'
    )
    result = rewrite_python(src, {key}, lambda v, h: "OPENAI_API_KEY")
    assert not result.changed
    lines = sorted(line for line, _ in result.unfixable)
    assert lines == [1, 2, 3, 4, 5, 6]
    assert key not in repr(result)  # the unchanged source still holds the key


def test_fix_result_repr_never_shows_a_key_left_in_place(repo, scanner, rng):
    moved, left = openai_key(rng), openai_key(rng)
    (repo / "app.py").write_text(f'KEY = "{moved}"\n# old: {left}\n')
    result = fix_findings(repo, _findings(scanner, repo), dry_run=True)
    [app] = result.files
    assert app.new_code is not None and left in app.new_code
    assert moved not in repr(result) and left not in repr(result)


def test_guidance_names_the_env_file_alike_for_python_it_cannot_parse(repo, scanner, rng):
    key = openai_key(rng)
    (repo / "broken.py").write_text(f'KEY = "{key}"\nif:\n')
    (repo / "web.js").write_text(f"const k = '{key}';\n")
    env = repo / "config" / "secrets.env"
    result = fix_findings(repo, _findings(scanner, repo), env_path=env, dry_run=True)
    texts = {f.path: f.guidance for f in result.files}
    assert "not rewritten: ParserSyntaxError" in texts["broken.py"][0]
    for path in ("broken.py", "web.js"):
        assert "(the value is in config/secrets.env as OPENAI_API_KEY)" in texts[path][0]


def test_import_os_added_once_after_docstring_when_no_imports(rng):
    key = virtual_key(rng)
    src = f'"""Doc."""\n\nKEY = "{key}"\nOPENAI_PROD_KEY = "{key}"\n'
    result = rewrite_python(src, {key}, lambda v, h: h or "OPENAI_API_KEY")
    assert result.code == (
        '"""Doc."""\nimport os\n\nKEY = os.environ["OPENAI_API_KEY"]\n'
        'OPENAI_PROD_KEY = os.environ["OPENAI_PROD_KEY"]\n'
    )
    src2 = f'import os\nKEY = "{key}"\n'
    assert rewrite_python(src2, {key}, lambda v, h: "X").code.count("import os") == 1


def test_file_mode_and_crlf_are_kept(repo, scanner, rng):
    key = openai_key(rng)
    path = repo / "tool.py"
    path.write_bytes(f'import sys\r\nKEY = "{key}"\r\n'.encode())
    os.chmod(path, 0o755)
    fix_findings(repo, _findings(scanner, repo))
    data = path.read_bytes()
    assert b'KEY = os.environ["OPENAI_API_KEY"]\r\n' in data and key.encode() not in data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755


def _notebook(code_key: str, output_key: str) -> dict:
    return {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": 1,
                "source": ["from openai import OpenAI\n", f"c = OpenAI(api_key='{code_key}')"],
                "outputs": [],
            },
            {
                "cell_type": "code",
                "metadata": {},
                "execution_count": 2,
                "source": ["import os\n", "os.environ['OPENAI_API_KEY']"],
                "outputs": [
                    {
                        "data": {"text/plain": [f"'{output_key}'"]},
                        "execution_count": 2,
                        "metadata": {},
                        "output_type": "execute_result",
                    },
                    {"name": "stdout", "output_type": "stream", "text": [f"key={output_key}\n"]},
                ],
            },
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _nbformat_text(nb: dict) -> str:
    """What Jupyter writes (nbformat: sorted keys, indent 1, UTF-8, final newline)."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def test_notebook_output_key_is_redacted_not_stored(repo, scanner, rng):
    code_key, output_key = openai_key(rng), openai_key(rng, "svcacct")
    nb = _notebook(code_key, output_key)
    original = _nbformat_text(nb)
    (repo / "nb.ipynb").write_text(original)
    findings = _findings(scanner, repo)
    assert sorted((f.cell, f.part) for f in findings) == [
        (1, "source"),
        (2, "output"),
        (2, "output"),
    ]
    result = fix_findings(repo, findings)
    assert _dotenv(repo / ".env") == {"OPENAI_API_KEY": code_key}
    text = (repo / "nb.ipynb").read_text()
    assert output_key not in text and code_key in text  # the code cell is left to the user
    # only the output strings changed, each to the key's redacted form; the rest byte for byte
    redacted = Secret(output_key, register=False).redacted
    assert text == original.replace(output_key, redacted)
    out = json.loads(text)["cells"][1]["outputs"]
    assert out[0]["data"]["text/plain"] == [f"'{redacted}'"]
    assert out[1]["text"] == [f"key={redacted}\n"]
    [fix] = result.files
    assert [cell for _, cell in fix.redacted_outputs] == [2, 2]
    assert len(fix.guidance) == 1 and "cell 1" in fix.guidance[0]
    assert result.stored == ["OPENAI_API_KEY -> .env"]
    assert output_key not in repr(result)
    # a second run finds only the code-cell key and changes nothing
    again = fix_findings(repo, _findings(scanner, repo))
    assert (repo / "nb.ipynb").read_text() == text and again.files[0].redacted_outputs == []


def test_notebook_output_key_never_goes_to_the_vault(repo, scanner, rng):
    code_key, output_key = openai_key(rng), openai_key(rng)
    (repo / "nb.ipynb").write_text(_nbformat_text(_notebook(code_key, output_key)))

    class Sink:
        def __init__(self):
            self.stored = {}

        def store(self, name, secret):
            self.stored[name] = secret.reveal()
            return f"{name} -> vault"

    sink = Sink()
    dry = fix_findings(repo, _findings(scanner, repo), sink=sink, dry_run=True)
    assert (repo / "nb.ipynb").read_text().count(output_key) == 2  # dry run: unchanged
    assert output_key not in dry.files[0].diff and code_key not in dry.files[0].diff
    removed = [ln for ln in dry.files[0].diff.splitlines() if ln.startswith("-") and "key=" in ln]
    assert len(removed) == 1 and len(dry.planned_vault) == 1
    fix_findings(repo, _findings(scanner, repo), sink=sink)
    assert list(sink.stored.values()) == [code_key]
    assert output_key not in (repo / "nb.ipynb").read_text()
    assert not (repo / ".env").exists()


def test_notebook_same_key_in_code_and_output(repo, scanner, rng):
    key = openai_key(rng)
    nb = _notebook(key, key)
    # not Jupyter's layout (json.dumps defaults): the output is still redacted, the source kept
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1))
    findings = _findings(scanner, repo)
    assert sorted((f.cell, f.part) for f in findings) == [
        (1, "source"),
        (2, "output"),
        (2, "output"),
    ]
    [out] = [f for f in findings if f.part == "output"][:1]
    assert "clear the output" in out.remedy
    result = fix_findings(repo, findings)
    text = "\n".join(result.files[0].guidance)
    assert "cell 1" in text and "nbconvert" not in text and key not in text
    after = json.loads((repo / "nb.ipynb").read_text())
    assert key in "".join(after["cells"][0]["source"])
    assert key not in json.dumps(after["cells"][1])
    assert _dotenv(repo / ".env") == {"OPENAI_API_KEY": key}  # read by the code cell


def test_notebook_output_that_cannot_be_edited_safely_gets_guidance_only(repo, scanner, rng):
    key, output_only = openai_key(rng), openai_key(rng)
    nb = _notebook(key, key)
    nb["cells"][1]["outputs"].append(
        {"name": "stderr", "output_type": "stream", "text": [f"{output_only}\n"]}
    )
    # the key is in code and output, and the layout is not one the fixer can reproduce (CRLF):
    # editing the output alone is not safe, so nothing in the notebook changes
    text = _nbformat_text(nb).replace("\n", "\r\n")
    (repo / "nb.ipynb").write_bytes(text.encode())
    result = fix_findings(repo, _findings(scanner, repo))
    [fix] = result.files
    assert (repo / "nb.ipynb").read_bytes() == text.encode()
    assert fix.redacted_outputs == [] and fix.new_code is None
    clear = [g for g in fix.guidance if "nbconvert --clear-output" in g]
    assert len(clear) == 3 and all("rotate" in g for g in clear)
    assert _dotenv(repo / ".env") == {"OPENAI_API_KEY": key}  # the code cell's key only
    assert output_only not in "\n".join(fix.guidance)
