"""The end of a run: its evaluation on the test split, pictures, eval.json and status.json.

Process 0 evaluates and writes (the others wait at the caller's barrier); a diverged member gets its
status only. What is written where is `ae_jax.workdir`'s; what is measured is `ae_jax.report`'s.
"""

from typing import Any

from absl import logging
import jax

from ae_jax import data
from ae_jax import multihost
from ae_jax import report
from ae_jax import step as step_lib
from ae_jax import workdir as workdir_lib
from ae_jax import writers


def finish(config, workdir: str, model, ds: data.Dataset, hp, result: workdir_lib.Result,
           shared: dict[Any, Any]) -> None:
  """Fills `result.eval` and `result.paths` (process 0) and writes the member's end-of-run files.

  `shared` caches what does not depend on the member (the PCA baseline, the pixel probe) across the
  members of a sweep.
  """
  if result.done and multihost.is_main():
    report_key = jax.random.fold_in(step_lib.run_keys(hp["seed"])[2], 1)  # eval_key drew the test losses' noise.
    result.eval = report.evaluate_model(config, model, result.params, ds, report_key, shared=shared)
    scalars = {workdir_lib.EVAL_PREFIX + k: v for k, v in result.eval.items()}
    warning = report.useless(result.eval)
    if warning:
      logging.warning("%s: %s", workdir, warning)
    if ds.has_validation:  # The same metrics on the validation split: what a sweep selects on.
      result.eval_validation = report.evaluate_model(config, model, result.params, ds.validation_as_test(),
                                                     jax.random.fold_in(report_key, 2),
                                                     shared=shared.setdefault("validation split", {}))
      scalars.update({workdir_lib.EVAL_VALIDATION_PREFIX + k: v for k, v in result.eval_validation.items()})
      result.paths["eval_validation"] = workdir_lib.write_eval(
          workdir, result.step, result.eval_validation, name=workdir_lib.EVAL_VALIDATION)
    logged = workdir_lib.read_metrics(workdir)
    if not workdir_lib.has_eval_row(logged, result.step):
      # Once per step: rerunning a finished run recomputes the same numbers, and does not log them twice.
      writer = writers.create(workdir)
      writer.write_scalars(result.step, scalars)
      writer.close()
    curves = logged or result.history  # The file includes resumed steps; eval/* rows hold no curve keys.
    result.paths.update(report.save_pictures(config, model, result.params, ds, workdir, report_key, curves))
    result.paths["eval"] = workdir_lib.write_eval(workdir, result.step, result.eval)
  if multihost.is_main():
    workdir_lib.write_status(workdir, result, num_epochs=config.num_epochs)
