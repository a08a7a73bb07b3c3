"""User terms: `config.extra_terms = "my_pkg.terms:orthogonality=0.1"` adds a function of the forward pass.

Each term is `term(forward: families.Forward) -> (B,)`, imported by path; `families.build` averages it,
weights it by `hp["weight/<name>"]` (a hyperparameter), adds it to the loss and reports `loss_<name>`.
"""

from collections.abc import Callable
import functools
import importlib
import os
import sys
import traceback
from typing import Any

import jax
import jax.numpy as jnp

from ae_jax import errors
from ae_jax import hparams

Term = Callable[[Any], jax.Array]  # families.Forward -> (B,)


def resolve_term(path: str) -> Term:
  """Imports `module.sub:function` and returns the function; ValueError with a fix if it can't.

  The working directory is importable, as for `python -m`: a `my_terms.py` next to where the run
  starts is found without setting PYTHONPATH.
  """
  module_name, sep, attr = path.partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"extra term {path!r} must look like 'package.module:function'")
  if os.getcwd() not in sys.path and "" not in sys.path:
    sys.path.append(os.getcwd())
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"cannot import module {module_name!r} for extra term {path!r}: {e}; the module must "
                     "be in the working directory or on PYTHONPATH") from None
  except SyntaxError as e:
    raise ValueError(f"module {module_name!r} of extra term {path!r} does not compile: {e.filename} line "
                     f"{e.lineno}: {type(e).__name__}: {e.msg}; fix the file") from None
  except Exception as e:  # pylint: disable=broad-except  # The module's own code raised while importing.
    where = traceback.extract_tb(e.__traceback__)[-1]
    raise ValueError(f"importing module {module_name!r} of extra term {path!r} raised {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''} ({where.filename} line {where.lineno})") from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ValueError(f"module {module_name!r} has no function {attr!r} (extra term {path!r})")
  return fn


def extra_terms(spec: str) -> dict[str, Term]:
  """The user terms of `config.extra_terms`, by name (their weights are hyperparameters).

  Each is wrapped so that an exception inside it is re-raised as `errors.TermError` naming the term,
  with the user's own exception (and traceback) as its cause.
  """
  terms = {}
  for name, path, _ in hparams.parse_extra_terms(spec):
    if name in terms:
      raise ValueError(f"extra term {name!r} is named twice; term names (the function names) must differ")
    terms[name] = _named(name, path, resolve_term(path))
  return terms


def _named(name: str, path: str, fn: Term) -> Term:
  @functools.wraps(fn)
  def term(forward) -> jax.Array:
    try:
      return fn(forward)
    except Exception as e:  # The user's code: name it, keep their exception and traceback as the cause.
      raise errors.TermError(f"extra term {name!r} ({path}) raised {type(e).__name__}: {e}; its traceback "
                             "follows") from e
  return term


def check_term(name: str, value: Any, shape: tuple[int, ...]) -> jax.Array:
  """The batch mean of a user term, after checking (while tracing) that it gave one float per example."""
  value = jnp.asarray(value)
  if value.shape != shape or not jnp.issubdtype(value.dtype, jnp.floating):
    hint = " (a scalar: return the per-example values, the loss averages them)" if not value.shape else ""
    raise ValueError(f"extra term {name!r} must return one float per example, shape (B,) = {shape} for this "
                     f"batch; it returned shape {value.shape} of {value.dtype}{hint}")
  return value.mean()
