"""Render a SLURM template of slurm/ into a job script: ``render_slurm.py TEMPLATE [KEY=VALUE ...] [-o OUT]``.

A template declares its placeholders in header lines ``# @param NAME=DEFAULT  description`` (no default
after ``=`` means the value is required) and uses them as ``@NAME@`` anywhere below. Rendering:

- every ``@NAME@`` is replaced by its value (KEY=VALUE on the command line, else the default);
- an ``#SBATCH`` line whose placeholder renders to the empty string is dropped (e.g. no ``--gpus-per-node``
  on CPU clusters, no ``--partition`` to use the cluster's default);
- the ``# @param`` lines are replaced by one line naming the template and the values used.

Errors (one line, exit 2): an unknown KEY, a required value missing, a value with characters that would
break the shell script (quotes, ``$``, backquote, backslash, newline), a placeholder left unrendered.
Uses only the Python standard library, so it runs on a login node without the project installed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

PARAM = re.compile(r"^# @param ([A-Z][A-Z0-9_]*)=(\S*)(?:\s+(.*))?$")
PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
UNSAFE = re.compile(r"[\"'`$\\\n\r;&|<>]")


class RenderError(ValueError):
    """A template could not be rendered (the message is one line)."""


def parse_params(text: str) -> dict[str, tuple[str | None, str]]:
    """{NAME: (default or None when required, description)} from the ``# @param`` lines of a template."""
    params: dict[str, tuple[str | None, str]] = {}
    for line in text.splitlines():
        m = PARAM.match(line)
        if m:
            name, default, desc = m.group(1), m.group(2), m.group(3) or ""
            # "NAME=" with "(required)" in the description means no default; "NAME=" alone means empty.
            required = desc.startswith("(required)")
            params[name] = (None if required else default, desc[len("(required)"):].strip() if required else desc)
    return params


def render(text: str, values: dict[str, str], source: str = "template") -> str:
    """The job script for ``text`` with ``values`` ({NAME: str}) and the template's defaults."""
    params = parse_params(text)
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise RenderError(f"{source}: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(params)})")
    final: dict[str, str] = {}
    for name, (default, _) in params.items():
        value = values.get(name, default)
        if value is None:
            raise RenderError(f"{source}: {name} is required (pass {name}=VALUE)")
        if UNSAFE.search(value):
            raise RenderError(f"{source}: {name}={value!r} contains a character that is unsafe in a shell script")
        final[name] = value
    used = set(PLACEHOLDER.findall(text))
    undeclared = sorted(used - set(params))
    if undeclared:
        raise RenderError(f"{source}: placeholder(s) {', '.join(undeclared)} used but not declared with # @param")
    out: list[str] = []
    header_done = False
    for line in text.splitlines():
        if PARAM.match(line):
            if not header_done:
                shown = " ".join(f"{k}={v}" for k, v in final.items() if v)
                out.append(f"# rendered from {os.path.basename(source)} by scripts/render_slurm.py: {shown}")
                header_done = True
            continue
        rendered = PLACEHOLDER.sub(lambda m: final[m.group(1)], line)
        if line.startswith("#SBATCH") and PLACEHOLDER.search(line) and re.search(r"=\s*$", rendered):
            continue  # an option left without a value: let the cluster's default apply
        out.append(rendered)
    result = "\n".join(out) + "\n"
    left = PLACEHOLDER.findall(result)
    if left:
        raise RenderError(f"{source}: placeholder(s) left after rendering: {', '.join(sorted(set(left)))}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="render_slurm.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("template", help="a template of slurm/ (e.g. slurm/backmap.sbatch)")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE", help="placeholder values")
    p.add_argument("-o", "--output", help="job script to write (default: stdout)")
    p.add_argument("--list", action="store_true", help="list the template's parameters and defaults")
    args = p.parse_args(argv)
    try:
        try:
            with open(args.template, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise RenderError(f"cannot read {args.template}: {exc.strerror}") from exc
        if args.list:
            for name, (default, desc) in parse_params(text).items():
                print(f"{name:18s} {'(required)' if default is None else repr(default):24s} {desc}")
            return 0
        values = {}
        for item in args.values:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise RenderError(f"expected KEY=VALUE, got {item!r}")
            values[key] = value
        script = render(text, values, args.template)
        if args.output:
            tmp = f"{args.output}.tmp.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(script)
            os.chmod(tmp, 0o755)
            os.replace(tmp, args.output)
        else:
            sys.stdout.write(script)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `render_slurm.py ... | head`
        return 0
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
