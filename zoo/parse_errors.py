"""jsonargparse's parse errors as one `zoo: error:` line: the bad option or value, and the closest match.

jsonargparse reports a mistake as a usage wall of 50+ lines with the cause at the bottom, nested inside
"Does not validate against any of the Union subtypes" blocks for every class-typed option. Its messages
have a stable shape (Parser key "...", Option '...' is not accepted, Expected a ..., Given value: ...),
so this module reads the innermost cause out of them; anything it does not recognise falls back to the
message's most specific line, never to a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

from zoo.errors import ZooError
from zoo.recipes import recipe_files

# What users of other trainers (timm's train.py, fastai, Keras) type, and zoo's option for it.
OTHER_TOOLS = {
    "epochs": "--trainer.max_epochs",
    "gpus": "--trainer.accelerator gpu --trainer.devices N",
    "bs": "--data.batch_size",
    "img_size": "--data.image_size",
    "data_dir": "--data.root",
    "model": "--model cnn|mlp|timm",
    "resume": "--ckpt_path PATH (or last)",
    "amp": "--trainer.precision bf16-mixed (or 16-mixed)",
}
TYPE_NAMES = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}


class ParseError(ZooError):
    """A command-line or config mistake; `detail` keeps jsonargparse's full message for --debug."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class ZooArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, raising one readable line instead of printing usage and exiting."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:  # a parser jsonargparse nests and catches errors from (Union, class args)
            return super().error(message, ex)
        raise ParseError(explain(message, self), message) from ex


def explain(message: str, parser: Any = None) -> str:
    """One line for a jsonargparse error message (see the module docstring)."""
    message = message.strip()
    if m := re.match(r"unrecognized arguments: (.*)", message, re.S):
        return _unrecognized(m.group(1).split(), parser)
    if m := re.match(r'Parser key "config":.*?File does not exist: \'?([^\']+)', message, re.S):
        return f"--config {m.group(1)}: no such file{_recipes_hint()}"
    if m := re.match(r'Parser key "([^"]+)":', message):
        return _bad_value(m.group(1), message)
    return _most_specific_line(message)


def _unrecognized(tokens: list[str], parser: Any) -> str:
    token = next((t for t in tokens if t.startswith("-")), tokens[0] if tokens else "")
    if not token.startswith("-"):
        if token.endswith((".yaml", ".yml")):
            return f"{token}: a config file is passed with --config (zoo fit --config {token})"
        return f"unexpected argument {token!r}; options start with --, e.g. --data.root PATH"
    name = token.split("=", 1)[0]
    options = sorted(o for o in getattr(parser, "_option_string_actions", {}) if o.startswith("--"))
    options += _class_options()
    bare = name.lstrip("-").replace("-", "_")
    if bare in OTHER_TOOLS:  # `--epochs`, `--gpus`: what other trainers call it
        return f"unknown option {name}; zoo's is {OTHER_TOOLS[bare]}"
    return f"unknown option {name}{_did_you_mean(name, options)}"


def _class_options() -> list[str]:
    """--model.* and --data.* options of zoo's own classes (the parser lists them only per class)."""
    from zoo.registry import families

    names = [
        f"--model.{p}"
        for cls in families().values()
        for p in init_parameters(f"{cls.__module__}.{cls.__name__}")
    ]
    names += [f"--data.{p}" for p in init_parameters("datamodules.ImageFolderDataModule")]
    return list(dict.fromkeys(names))


def _bad_value(key: str, message: str) -> str:
    """An error under `Parser key "KEY"`: an unknown nested option, a bad choice or a bad type."""
    class_path = _last(r"Problem with given class_path '([^']+)'", message)
    if option := _last(r"Option '([^']+)' is not accepted", message):
        name = f"--{key}.{option}"
        choices = [f"--{key}.{p}" for p in init_parameters(class_path)] if class_path else []
        owner = f" of {class_path.rsplit('.', 1)[-1]}" if class_path else ""
        return f"{name} is not an option{owner}{_did_you_mean(name, choices)}"
    if inner := _last(r'Parser key "([^"]+)":', message[message.find(":") + 1 :]):
        key = f"{key}.{inner}"  # a class's own argument: data -> data.augment
    if dotted := _last(r"Expected a dot import path string: (\S+)", message):
        return _unknown_class(key, dotted)
    value = _given_value(message, key.rsplit(".", 1)[-1])
    expected = [TYPE_NAMES.get(t, t) for t in re.findall(r"Expected a <class '(?:\w+\.)*(\w+)'>", message)]
    expected = [t for t in dict.fromkeys(expected) if t != "NoneType"]
    choices = [
        c
        for lit in re.findall(r"Expected a typing\.Literal\[([^\]]*)\]", message)
        for c in re.findall(r"'([^']*)'", lit)
    ]
    if choices and not expected:
        return f"--{key} {value}: choose one of {', '.join(choices)}{_did_you_mean(value, choices)}"
    if expected:
        expected += [repr(c) for c in choices]
        return f"--{key} {value}: expected {' or '.join(expected)}{_did_you_mean(value, choices)}"
    return f"--{key}: {_most_specific_line(message)}"


def _unknown_class(key: str, given: str) -> str:
    from zoo.registry import families

    if key == "model" and given in families():  # `model: cnn` in a YAML file, or --model.class_path cnn
        cls = families()[given]
        return (
            f"--model {given}: the short name works only as `--model {given}` on the command line; in a config "
            f"file or --model.class_path write {cls.__name__} (or {cls.__module__}.{cls.__name__})"
        )
    if key == "model":
        names = list(families()) + [cls.__name__ for cls in families().values()]
        return (
            f"--model {given}: unknown model; choose one of {', '.join(families())} "
            f"(or a class path such as zoo.scratch.CNNClassifier){_did_you_mean(given, names)}"
        )
    return f"--{key} {given}: no such class; give its import path, e.g. datamodules.ImageFolderDataModule"


def init_parameters(class_path: str) -> list[str]:
    """The constructor arguments of a class, following **kwargs up the base classes as jsonargparse does."""
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [
            p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def _did_you_mean(given: str, choices: list[str]) -> str:
    """ "; did you mean X?" for the closest choice, comparing only the last part of dotted option names."""

    def norm(s: str) -> str:
        return s.lower().replace("-", "_")

    prefix, _, tail = norm(given).rpartition(".")
    bare = norm(given.lstrip("-")).rpartition(".")[2]  # `--lr` -> lr (norm turns the dashes into _)
    if given.startswith("--"):  # `--lr`, `--batch_size`: the very same name one level down comes first
        exact = [c for c in choices if norm(c).rsplit(".", 1)[-1] == bare and norm(c) != norm(given)]
        if exact:
            return f"; did you mean {exact[0]}?"
    same_level = {norm(c).rpartition(".")[2]: c for c in choices if norm(c).rpartition(".")[0] == prefix}
    match = difflib.get_close_matches(tail, list(same_level), n=1, cutoff=0.6)
    if match:
        return f"; did you mean {same_level[match[0]]}?"
    if given.startswith("--"):  # --max_epochs for --trainer.max_epochs: the same name one level down
        tails = {norm(c).rsplit(".", 1)[-1]: c for c in reversed(choices)}
        tail_match = difflib.get_close_matches(bare, list(tails), n=1, cutoff=0.8)
        return f"; did you mean {tails[tail_match[0]]}?" if tail_match else ""
    return ""


def _given_value(message: str, name: str) -> str:
    """The value the user gave for `name`: from the command line (NestedArg) or from a config file (a dict)."""
    nested = _last(r"Given value: NestedArg\(key='[^']*', val='([^']*)'\)", message)
    if nested is not None:
        return nested
    given = _last(r"Given value: (.*)", message) or "?"
    from_file = (
        re.search(rf"'{re.escape(name)}': '?([^',}}]*)'?", given)
        if given.startswith(("{", "Namespace"))
        else None
    )
    if from_file is None and given.startswith("Namespace"):
        from_file = re.search(rf"\b{re.escape(name)}='?([^',)]*)'?", given)
    return from_file.group(1) if from_file else given


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text)
    return found[-1] if found else None


def _most_specific_line(message: str) -> str:
    lines = [ln.strip(" -") for ln in message.splitlines() if ln.strip(" -")]
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")
    useful = [ln for ln in lines if not ln.startswith(noise)]
    return (useful or lines or ["invalid arguments"])[-1]


def _recipes_hint() -> str:
    recipes = [p.name for p in recipe_files()]
    return f"; the recipes are {', '.join(f'configs/{r}' for r in recipes)}" if recipes else ""
