"""The mutation check: plausible one-line bugs, each of which the tests named beside it must catch.

  python -m tests.mutants                   # every mutant; exit 1 naming the survivors
  python -m tests.mutants --list            # the mutants, one line each
  python -m tests.mutants NAME ...          # only these
  python -m tests.mutants --tests-from=REV  # against the test files of git revision REV: a "before" score

A passing suite says the code does what the tests check; this says the tests check what matters. Each
mutant is applied alone to a copy of the repository (`git ls-files`, untracked files included) in a
temporary directory, and its tests run there with `-x -q -p no:cacheprovider`: it is caught when they
fail, and survives when they pass. The check fails if a mutant survives, or if a mutant's original text
no longer appears exactly once in its file (so the list cannot silently rot when the code changes: fix
the mutant, or replace it). The tests share tests/conftest.py's persistent XLA compilation cache, so a
program the mutant leaves unchanged compiles once for all of them. To add a mutant: a bug someone could
plausibly write, and the narrowest tests that catch it (the whole list should run in a few minutes).
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600  # One mutant's tests; a mutant that hangs them is reported as caught (by the timeout).


@dataclasses.dataclass(frozen=True)
class Mutant:
  """One bug: `edits` (original -> mutated text, each original exactly once in `path`) and the tests
  (pytest node ids or files) that must catch it."""

  name: str
  path: str
  edits: tuple[tuple[str, str], ...]
  tests: tuple[str, ...]
  why: str


def _mutant(name: str, path: str, original: str, mutated: str, tests: str | tuple[str, ...], why: str,
            *more_edits: tuple[str, str]) -> Mutant:
  return Mutant(name, path, ((original, mutated), *more_edits), (tests,) if isinstance(tests, str) else tests, why)


_FAMILIES = "tests/test_families.py::"
_SETPOINT = "tests/test_setpoint.py::"
_LOSSES = "tests/test_losses.py::"
_TRAIN = "tests/test_train.py::"
_EVALUATION = "tests/test_evaluation.py::"
_REPORT = "tests/test_report.py::"
_MEAN_GRADIENT = _TRAIN + "test_the_data_parallel_step_applies_the_mean_gradient_of_the_whole_batch"
_DENOISING = _FAMILIES + "test_denoising_reconstructs_the_clean_input_from_the_corrupted_one"
_KNOWN_POSTERIOR = _FAMILIES + "test_vae_bounds_are_log_px_when_q_is_the_posterior"

MUTANTS: tuple[Mutant, ...] = (
    # --- losses/
    _mutant("variational.kl_without_half", "ae_jax/losses/variational.py",
            "kl = 0.5 * (jnp.square(mean)", "kl = (jnp.square(mean)",
            _LOSSES + "test_kl_standard_normal_known_values", "the KL to N(0, I) without its 0.5"),
    _mutant("variational.iwae_without_log_k", "ae_jax/losses/variational.py",
            "return jax.nn.logsumexp(log_weights, axis=axis) - jnp.log(float(log_weights.shape[axis]))",
            "return jax.nn.logsumexp(log_weights, axis=axis)", _KNOWN_POSTERIOR,
            "IWAE's log of the sum of the weights, not of their mean"),
    _mutant("sparsity.kl_arguments_swapped", "ae_jax/losses/sparsity.py",
            "return bernoulli_kl(rho, jnp.clip(rho_hat, eps, 1.0 - eps))",
            "return bernoulli_kl(jnp.clip(rho_hat, eps, 1.0 - eps), rho)",
            _FAMILIES + "test_sparse_kl_penalises_the_mean_code_against_rho_in_that_order",
            "KL(rho_hat || rho) instead of KL(rho || rho_hat)"),
    _mutant("contractive.fast_path_unsquared_derivative", "ae_jax/losses/contractive.py",
            "return jnp.sum(jnp.square(ds1) * jnp.sum(jnp.square(w1), axis=0), axis=1)",
            "return jnp.sum(ds1 * jnp.sum(jnp.square(w1), axis=0), axis=1)",
            _FAMILIES + "test_contractive_penalty_is_the_encoder_jacobians_squared_frobenius_norm",
            "the one-layer fast path with s'(a), not s'(a)^2"),
    _mutant("corruption.masking_keeps_the_rate", "ae_jax/losses/corruption.py",
            "jax.random.bernoulli(key, rate, x.shape), jnp.zeros_like(x), x)",
            "jax.random.bernoulli(key, 1 - rate, x.shape), jnp.zeros_like(x), x)",
            _LOSSES + "test_masking_zeroes_the_requested_fraction_and_keeps_the_rest",
            "masking zeroes 1 - rate of the inputs"),
    _mutant("reconstruction.squared_error_of_logits", "ae_jax/losses/reconstruction.py",
            "return squared_error(jax.nn.sigmoid(logits), target)", "return squared_error(logits, target)",
            _LOSSES + "test_from_logits_dispatch_and_errors", "the squared error of the logits, not of the mean"),
    # --- families.py
    _mutant("families.denoising_target_is_the_corrupted_input", "ae_jax/families.py",
            "forward, _ = setup.autoencode(params, x, x_in, keys)\n  rec = setup.reconstruction(forward.logits, x)",
            "forward, _ = setup.autoencode(params, x, x_in, keys)\n  rec = setup.reconstruction(forward.logits, x_in)",
            _DENOISING, "the denoising AE compares its reconstruction with the corrupted input"),
    _mutant("families.denoising_encodes_the_clean_input", "ae_jax/families.py",
            "forward, _ = setup.autoencode(params, x, x_in, keys)", "forward, _ = setup.autoencode(params, x, x, keys)",
            _DENOISING, "the encoder never sees the corruption"),
    _mutant("families.denoising_level_as_a_variance", "ae_jax/families.py",
            'level=hp["noise_level"])', 'level=hp["noise_level"] ** 2)', _DENOISING,
            "noise_level read as a variance (or a rate squared)"),
    _mutant("families.l1_of_the_logits", "ae_jax/families.py",
            "penalty, weight = sparsity.l1(forward.code).mean()",
            "penalty, weight = sparsity.l1(forward.logits).mean()",
            _FAMILIES + "test_sparse_l1_penalises_the_code", "the L1 penalty on the output instead of the code"),
    _mutant("families.kl_mean_over_units", "ae_jax/families.py",
            "axis_name=setup.axis_name).sum()", "axis_name=setup.axis_name).mean()",
            _FAMILIES + "test_sparse_kl_penalises_the_mean_code_against_rho_in_that_order",
            "the KL sparsity penalty averaged over units instead of summed"),
    _mutant("families.contractive_frobenius_norm_not_squared", "ae_jax/families.py",
            'return (rec + hp["contractive_weight"] * penalty,',
            'return (rec + hp["contractive_weight"] * jnp.sqrt(penalty),',
            _FAMILIES + "test_contractive_penalty_is_the_encoder_jacobians_squared_frobenius_norm",
            "the Jacobian's Frobenius norm instead of its square"),
    _mutant("families.vae_beta_ignored", "ae_jax/families.py", 'kl, beta=hp["beta"])', "kl, beta=1.0)",
            _FAMILIES + "test_vae_negative_elbo_is_minus_log_px_plus_beta_kl_exactly", "beta not applied to the KL"),
    _mutant("families.iwae_weights_of_the_loss", "ae_jax/families.py",
            "log_importance_weights(-rec, code, mean, logvar)", "log_importance_weights(rec, code, mean, logvar)",
            _KNOWN_POSTERIOR, "the reconstruction loss used as log p(x|z) (its sign lost)"),
    _mutant("families.auxk_with_topk_units", "ae_jax/families.py",
            "dead, k=setup.config.auxk)", "dead, k=setup.config.topk)",
            _FAMILIES + "test_auxk_loss_is_the_dead_units_model_of_the_residual_by_hand", "AuxK's k taken from TopK's"),
    # --- step.py
    _mutant("step.gradient_all_reduce_dropped", "ae_jax/step.py",
            "        grads = lax.pmean(grads, DATA)\n", "", _MEAN_GRADIENT,
            "no all-reduce of the gradients (JAX's type check refuses it when tracing the step)"),
    _mutant("step.gradient_all_reduce_dropped_unchecked", "ae_jax/step.py",
            "        grads = lax.pmean(grads, DATA)\n", "", _MEAN_GRADIENT,
            "no all-reduce, with shard_map's type check off: each device's own gradient, device 0's kept",
            ("out_specs=(P(SWEEP), P(SWEEP)))", "out_specs=(P(SWEEP), P(SWEEP)), check_vma=False)")),
    _mutant("step.gradients_summed", "ae_jax/step.py",
            "grads = lax.pmean(grads, DATA)", "grads = lax.psum(grads, DATA)",
            _MEAN_GRADIENT, "the devices' gradients summed, not averaged"),
    _mutant("step.diverged_at_off_by_one", "ae_jax/step.py",
            "diverged_at=jnp.where(alive, state.step + 1, state.diverged_at)",
            "diverged_at=jnp.where(alive, state.step, state.diverged_at)",
            _TRAIN + "test_a_diverging_member_is_frozen_and_the_others_go_on", "the divergence reported a step early"),
    _mutant("step.iwae_schedule_exponent", "ae_jax/step.py",
            "10.0 ** (-stage / (IWAE_STAGES - 1))", "10.0 ** (-stage / IWAE_STAGES)",
            "tests/test_optimizer.py::test_iwae_schedule_known_values", "the IWAE schedule never reaches lr / 10"),
    # --- feeds.py
    _mutant("feeds.resumed_chunk_starts_at_epoch_0", "ae_jax/feeds.py",
            'perms = self.epoch_orders(hp["seed"], step // self.steps_per_epoch)',
            'perms = self.epoch_orders(hp["seed"], 0)',
            _TRAIN + "test_scan_and_step_loops_train_bitwise_alike",
            "a scanned chunk starting inside a later epoch reads epoch 0's order"),
    _mutant("feeds.epoch_orders_kept_across_epochs", "ae_jax/feeds.py",
            "self._perms[0] is not seeds or self._perms[1] != epoch:", "self._perms[0] is not seeds:",
            "tests/test_checkpoints.py::test_resume_across_an_epoch_boundary_matches_an_uninterrupted_run[device]",
            "the step loop keeps the first epoch's order for the next ones"),
    _mutant("feeds.auto_loop_ignores_members", "ae_jax/feeds.py",
            "examples_per_step=batch_size * members)", "examples_per_step=batch_size)",
            _TRAIN + "test_auto_loop_scans_as_measured_and_counts_every_members_examples",
            "a sweep's program of many members runs the slower step loop on CPU"),
    _mutant("feeds.logged_norms_of_the_first_step", "ae_jax/feeds.py",
            "v[-1:] if k in step_lib.LOGGED_STEP_METRICS", "v[:1] if k in step_lib.LOGGED_STEP_METRICS",
            _TRAIN + "test_the_logged_norms_are_those_of_the_last_step",
            "the logged parameter and update norms taken from the chunk's first step"),
    _mutant("feeds.streamed_members_share_an_order", "ae_jax/feeds.py",
            "self._permutations(self._seeds, epoch, len(self._images))",
            "self._permutations(self._seeds[:1].repeat(len(self._seeds)), epoch, len(self._images))",
            _TRAIN + "test_streamed_members_of_different_seeds_read_their_own_batches",
            "every streamed member reads member 0's batches"),
    # --- hparams.py
    _mutant("hparams.scales_are_structure", "ae_jax/hparams.py",
            'if k not in KEYS + VECTOR_KEYS and k != "overwrite"}', 'if k not in KEYS and k != "overwrite"}',
            "tests/test_optimizer.py::test_piecewise_scales_are_hyperparameters_and_boundaries_structure",
            "the piecewise scales split a sweep into programs"),
    _mutant("hparams.members_reversed", "ae_jax/hparams.py",
            "np.asarray([hp[k] for hp in hps],", "np.asarray([hp[k] for hp in hps[::-1]],",
            _TRAIN + "test_members_of_one_program_equal_their_single_runs[1-vmap]",
            "a program's members get each other's hyperparameters"),
    # --- evaluation.py, evaluators.py, likelihood.py
    _mutant("evaluation.psnr_floor", "ae_jax/evaluation.py", "PSNR_MIN_MSE = 1e-10", "PSNR_MIN_MSE = 1e-12",
            _EVALUATION + "test_psnr_is_finite_for_a_perfect_image", "a perfect image scores 120 dB, not 100"),
    _mutant("evaluation.gaussian_sigmas", "ae_jax/evaluation.py", "GAUSSIAN_SIGMAS = (0.1, 0.3, 0.5)",
            "GAUSSIAN_SIGMAS = (0.1, 0.2, 0.5)", _EVALUATION + "test_denoising_stats_default_corruptions_known_values",
            "another default noise level: the reported psnr_gain/gaussian_0.3 disappears"),
    _mutant("evaluation.denoising_level_halved", "ae_jax/evaluation.py",
            "functools.partial(corruption.corrupt, kind=kind, level=level)",
            "functools.partial(corruption.corrupt, kind=kind, level=level / 2)",
            _EVALUATION + "test_denoising_stats_default_corruptions_known_values",
            "the corruption applied is not the one named"),
    _mutant("evaluation.noisy_baseline_unclipped", "ae_jax/evaluation.py",
            "mse(jnp.clip(noisy, 0.0, 1.0), xb)", "mse(noisy, xb)",
            _EVALUATION + "test_denoising_stats_default_corruptions_known_values",
            "the noisy baseline not clipped to [0, 1] (an inflated gain)"),
    _mutant("evaluation.sparsity_default_threshold", "ae_jax/evaluation.py",
            "def sparsity_stats(codes: ArrayLike, *, threshold: float = 1e-3)",
            "def sparsity_stats(codes: ArrayLike, *, threshold: float = 1e-2)",
            _EVALUATION + "test_sparsity_stats_count_units_above_1e_3_by_default", "another default L0 threshold"),
    _mutant("evaluation.pca_smallest_components", "ae_jax/evaluation.py",
            "basis = vectors[:, d - k:]", "basis = vectors[:, :k]",
            _EVALUATION + "test_pca_baseline_keeps_the_largest_variance_directions",
            "the PCA baseline keeps the directions of least variance"),
    _mutant("evaluators.l0_threshold_bounded", "ae_jax/losses/sparsity.py",
            "L0_THRESHOLD_BOUNDED = 0.1", "L0_THRESHOLD_BOUNDED = 0.05",
            _EVALUATION + "test_the_sparsity_evaluator_counts_codes_above_the_family_threshold",
            "bounded codes count as on from 5% of full scale"),
    _mutant("evaluators.l0_threshold_forgets_tanh", "ae_jax/losses/sparsity.py",
            'code_activation in ("sigmoid", "tanh")', 'code_activation == "sigmoid"',
            _EVALUATION + "test_the_sparsity_evaluator_counts_codes_above_the_family_threshold",
            "tanh codes measured with the ReLU threshold"),
    _mutant("evaluators.elbo_always_bernoulli", "ae_jax/evaluators.py",
            'ctx.keys["elbo"],\n' + " " * 30 + "likelihood=reconstruction.likelihood(ctx.config.reconstruction)",
            'ctx.keys["elbo"],\n' + " " * 30 + 'likelihood="bernoulli"',
            _REPORT + "test_vae_terms_use_the_gaussian_likelihood_for_squared_error",
            "the ELBO terms ignore the reconstruction kind"),
    _mutant("likelihood.active_units_threshold", "ae_jax/likelihood.py",
            "def active_units(means: ArrayLike, *, threshold: float = 0.01)",
            "def active_units(means: ArrayLike, *, threshold: float = 0.005)",
            _EVALUATION + "test_active_units_default_threshold_is_a_variance_of_0_01",
            "another active-units threshold"),
    _mutant("likelihood.iwae_mean_over_a_chunk", "ae_jax/likelihood.py",
            "return log_total - jnp.log(float(num_samples))", "return log_total - jnp.log(float(chunk_size))",
            _EVALUATION + "test_iwae_exact_posterior_has_zero_variance", "the IWAE mean divides by the chunk size"),
    _mutant("likelihood.gaussian_without_its_constant", "ae_jax/likelihood.py",
            "0.5 * jnp.square(x - jax.nn.sigmoid(logits)) + 0.5 * jnp.log(2 * jnp.pi)",
            "0.5 * jnp.square(x - jax.nn.sigmoid(logits))",
            _EVALUATION + "test_named_likelihoods_are_minus_their_reconstruction_terms",
            "the fast Gaussian likelihood drops log(2 pi) / 2 per pixel"),
    # --- sweep.py, workdir.py, the default config
    _mutant("sweep.results_to_the_wrong_members", "ae_jax/sweep.py",
            "for i, out in zip(group, outs):", "for i, out in zip(group, outs[::-1]):",
            "tests/test_sweep.py::test_a_diverging_member_is_marked_and_the_others_finish",
            "a program's results given to each other's members"),
    _mutant("sweep.test_loss_column_from_training", "ae_jax/sweep.py",
            '"test_loss": result.test.get("loss", math.nan)', '"test_loss": result.train.get("loss", math.nan)',
            "tests/test_sweep.py::test_a_diverging_member_is_marked_and_the_others_finish",
            "the table's test_loss is the training loss"),
    _mutant("workdir.truncate_drops_the_checkpoint_step", "ae_jax/workdir.py",
            'row["step"] <= step]', 'row["step"] < step]',
            "tests/test_checkpoints.py::test_resume_matches_an_uninterrupted_run",
            "a resumed run drops the metrics row of the step it resumes from"),
    _mutant("workdir.num_steps_not_resumable", "ae_jax/workdir.py",
            'RESUMABLE_KEYS = frozenset({"num_steps", "num_epochs",', 'RESUMABLE_KEYS = frozenset({"num_epochs",',
            "tests/test_checkpoints.py::test_probe_settings_are_resumable_and_a_cosine_schedule_fixes_the_length",
            "raising num_steps refuses the workdir instead of training on"),
    # --- sweep_spec.py, sweep_table.py: user-term weights, the outputs, the ranking of settings
    _mutant("sweep_spec.weight_names_hashed", "ae_jax/sweep_spec.py",
            'return key if name is None else f"{WEIGHT_PREFIX[:-1]}.{name}"', "return key",
            "tests/test_sweep_spec.py::test_a_user_terms_weight_is_swept_as_a_number_inline",
            "a weight/<name> member's folder gets a hash suffix"),
    _mutant("sweep_table.best_member_not_best_setting", "ae_jax/sweep_table.py",
            "setting = tuple(_hashable(row.get(k)) for k in keys) if SEED_KEY in swept_keys else i",
            "setting = i",
            "tests/test_sweep_table.py::test_select_ranks_settings_by_their_mean_over_seeds_and_names_the_best_seed",
            "--select names the single best member, not the best setting over its seeds"),
    _mutant("sweep_table.six_panels", "ae_jax/sweep_table.py",
            "return measured(rows, metrics, counted=True)", "return measured(rows, metrics, counted=True)[:6]",
            "tests/test_sweep_table.py::test_the_picture_has_a_panel_for_every_measured_metric_and_none_for_skipped_ones",
            "sweep.png draws only the first 6 metrics (the VAE's active units drop out)"),
    _mutant("sweep.term_test_loss_from_training", "ae_jax/sweep.py",
            'row[f"test_loss_{term}"] = result.test.get(', 'row[f"test_loss_{term}"] = result.train.get(',
            "tests/test_sweep_outputs.py::test_a_sweep_over_a_user_terms_weight_reports_its_losses_everywhere",
            "a user term's test loss column holds its training loss"),
    # --- set points
    _mutant("setpoint.measured_per_device", "ae_jax/setpoint.py",
            "    measured = lax.pmean(measured, axis_name)", "    measured = measured",
            _SETPOINT + "test_the_measured_quantity_is_averaged_over_the_data_axis",
            "each device moves its controller by its own quarter of the batch"),
    _mutant("setpoint.direction_ignored", "ae_jax/setpoint.py",
            "state[STATE] + rate * point.direction * error", "state[STATE] + rate * error",
            _SETPOINT + "test_the_update_is_dual_ascent_in_log_space_on_the_clipped_relative_error",
            "GECO raises beta when the reconstruction is too poor"),
    _mutant("setpoint.error_unclipped", "ae_jax/setpoint.py",
            "jnp.clip((measured - target) / jnp.maximum(target, 1e-12), -1.0, 1.0)",
            "(measured - target) / jnp.maximum(target, 1e-12)",
            _SETPOINT + "test_the_update_is_dual_ascent_in_log_space_on_the_clipped_relative_error",
            "one odd batch throws the coefficient"),
    _mutant("families.setpoint_hp_unused", "ae_jax/families.py",
            "      hp = setpoint.controlled_hp(point, hp, state)", "      hp = dict(hp)",
            _SETPOINT + "test_the_controller_moves_the_coefficient_toward_the_target",
            "the loss keeps the initial coefficient while the controller logs another"),
    _mutant("workdir.torn_row_kept", "ae_jax/workdir.py",
            'except ValueError:\n      where = "its last row"', 'except KeyError:\n      where = "its last row"',
            "tests/test_faults_checkpoints.py::test_torn_records_are_dropped_or_rederived_and_the_run_resumes",
            "a torn metrics row is read as a row"),
    _mutant("workdir.lock_not_exclusive", "ae_jax/workdir.py",
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
            "tests/test_faults_cli.py::test_the_lock_is_an_os_lock_and_all_diverged_sweeps_exit_3",
            "two runs may hold one workdir's lock"),
    _mutant("checkpoints.checksum_ignored", "ae_jax/checkpoints.py",
            "if checksum(saved) != expected:", "if checksum(saved) == expected and False:",
            "tests/test_faults_checkpoints.py::test_last_good_is_the_verified_checkpoint",
            "flipped bytes in a checkpoint restore without a word"),
    # --- search, PBT, the validation split, the assembly
    _mutant("search.keeps_too_few", "ae_jax/search.py",
            "return set(ranked[:math.ceil(len(ranked) / eta)])", "return set(ranked[:len(ranked) // eta])",
            "tests/test_search.py::test_ranking_averages_seeds_puts_non_finite_last_and_breaks_ties_by_order",
            "halving keeps floor(n / eta) settings, none of 2 at eta 3"),
    _mutant("search.elbo_without_kl", "ae_jax/search.py",
            'SUMS = {"negative_elbo": ("loss_rec", "loss_kl")}', 'SUMS = {"negative_elbo": ("loss_rec",)}',
            "tests/test_search.py::test_ranking_averages_seeds_puts_non_finite_last_and_breaks_ties_by_order",
            "the rung metric -ELBO forgets the KL"),
    _mutant("pbt.best_copy_the_worst", "ae_jax/pbt.py",
            "  top = [i for i in order[:count] if math.isfinite(scores[i])]",
            "  top = [i for i in order[n - count:] if math.isfinite(scores[i])]",
            "tests/test_pbt.py::test_the_bottom_quantile_copies_the_top_and_non_finite_ranks_last",
            "parents drawn from the bottom quantile"),
    _mutant("pbt.lineage_stays_with_the_member", "ae_jax/pbt.py",
            'current, end = move["parent"], exploit["step"]', 'current, end = move["member"], exploit["step"]',
            "tests/test_pbt.py::test_lineage_walks_back_through_the_members_whose_state_it_took",
            "a replay follows the member's own slot instead of the state it took"),
    _mutant("data.validation_overlaps_training", "ae_jax/data.py",
            "held, kept = np.sort(order[:size]), np.sort(order[size:])",
            "held, kept = np.sort(order[:size]), np.sort(order)",
            "tests/test_validation.py::test_the_carved_split_is_a_fixed_disjoint_subset_of_the_training_examples",
            "the validation examples are also trained on"),
    _mutant("program.ignores_the_output_bias", "ae_jax/program.py",
            'bias = models.data_mean_logits(dataset.train_images) if config.init_output_bias == "data_mean" else None',
            "bias = None",
            "tests/test_train.py::test_training_length_in_epochs_and_the_data_mean_output_bias",
            "the assembly drops init_output_bias (the old benchmark's drift)"),
    _mutant("default_config.iwae_samples", "experiments/configs/default.py",
            "c.iwae_samples = 1000", "c.iwae_samples = 100", _REPORT + "test_the_defaults_that_decide_what_is_measured",
            "the reported log-likelihood estimated from 100 samples"),
    # --- a trained model back, the default workdir, the useless-model warning, per-kind sparse weights
    _mutant("trained.decode_returns_logits", "ae_jax/trained.py",
            "lambda c: jax.nn.sigmoid(apply.decode_logits(c))", "lambda c: apply.decode_logits(c)",
            "tests/test_trained.py::test_a_loaded_run_encodes_and_decodes_as_the_trained_model",
            "decode gives logits, not images in [0, 1]"),
    _mutant("workdir.default_ignores_the_overrides", "ae_jax/workdir.py",
            "if config.get(k) != defaults.get(k)}", 'if k == "family"}',
            "tests/test_usage.py::test_readmes_train_lines_run_in_order_are_not_refused",
            "every run of a family gets one default workdir: README's lines refuse each other"),
    _mutant("report.useless_misses_a_collapse", "ae_jax/report.py",
            'if metrics.get("active_units", 1) == 0:', 'if metrics.get("active_units", 1) < 0:',
            "tests/test_useless.py::test_each_sign_of_a_useless_model_gives_one_line",
            "a VAE with no active units ends without a word"),
    _mutant("sparse_config.l1_keeps_the_kl_weight", "experiments/configs/sparse.py",
            '"l1": 0.01,', '"l1": 5.0,',
            "tests/test_useless.py::test_the_sparse_l1_line_trains_a_model_with_few_dead_units",
            "README's L1 line with the KL's weight: 88% of the units dead"),
)


# Against older tests (--tests-from), each mutant runs whole files: its own tests' files and these, the test
# files of the module it mutates (what a by-hand audit of one module runs).
COVERING = {
    "ae_jax/losses/contractive.py": ("tests/test_contractive.py", "tests/test_losses.py"),
    "ae_jax/losses/": ("tests/test_losses.py",),
    "ae_jax/families.py": ("tests/test_families.py",),
    "ae_jax/step.py": ("tests/test_train.py", "tests/test_optimizer.py"),
    "ae_jax/feeds.py": ("tests/test_train.py",),
    "ae_jax/hparams.py": ("tests/test_optimizer.py", "tests/test_train.py"),
    "ae_jax/evaluation.py": ("tests/test_evaluation.py",),
    "ae_jax/evaluators.py": ("tests/test_evaluation.py", "tests/test_report.py"),
    "ae_jax/likelihood.py": ("tests/test_evaluation.py",),
    "ae_jax/sweep.py": ("tests/test_sweep.py",),
    "ae_jax/workdir.py": ("tests/test_checkpoints.py", "tests/test_faults_checkpoints.py"),
    "ae_jax/checkpoints.py": ("tests/test_checkpoints.py", "tests/test_faults_checkpoints.py"),
    "experiments/configs/default.py": ("tests/test_cli.py", "tests/test_report.py"),
    "ae_jax/trained.py": ("tests/test_trained.py",),
    "ae_jax/report.py": ("tests/test_useless.py", "tests/test_report.py"),
}


def _files(root: str) -> list[str]:
  """The repository's files: tracked and untracked, minus what .gitignore ignores and what was deleted."""
  out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.decode()
  return sorted({p for p in out.split("\0") if p and os.path.isfile(os.path.join(root, p))})


def _copy(root: str, dest: str) -> None:
  for rel in _files(root):
    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
    shutil.copyfile(os.path.join(root, rel), os.path.join(dest, rel))
    shutil.copymode(os.path.join(root, rel), os.path.join(dest, rel))


def _tests_from(root: str, rev: str, dest: str) -> None:
  """Replaces dest/tests with the tests of git revision `rev` (this file excepted: it is not a test)."""
  shutil.rmtree(os.path.join(dest, "tests"))
  names = subprocess.run(["git", "-C", root, "ls-tree", "-r", "--name-only", rev, "tests"], capture_output=True,
                         text=True, check=True).stdout.split()
  for rel in names:
    os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
    with open(os.path.join(dest, rel), "wb") as f:
      f.write(subprocess.run(["git", "-C", root, "show", f"{rev}:{rel}"], capture_output=True, check=True).stdout)


def stale(mutants, root: str = ROOT) -> list[str]:
  """One line per edit whose original text does not appear exactly once in its file."""
  lines = []
  for m in mutants:
    path = os.path.join(root, m.path)
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    for original, _ in m.edits:
      count = 0 if text is None else text.count(original)
      if count != 1:
        lines.append(f"{m.name}: {m.path} holds {count} copies of {original!r} (it needs exactly 1)")
  return lines


def _selection(m: Mutant, copy: str, whole_files: bool) -> list[str]:
  """The tests to run: the node ids, or (against older tests) the files of those and of `COVERING` that exist."""
  if not whole_files:
    return list(m.tests)
  covering = next((files for prefix, files in COVERING.items() if m.path.startswith(prefix)), ())
  files = dict.fromkeys([t.split("::")[0] for t in m.tests] + list(covering))
  return [f for f in files if os.path.exists(os.path.join(copy, f))]


def _pytest(copy: str, tests: list[str], env: dict[str, str]) -> tuple[int | None, str]:
  """(pytest's exit code or None on timeout, the last lines of its output)."""
  proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=copy,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, 9)
    out, _ = proc.communicate()
    return None, out[-3000:]
  return proc.returncode, out[-3000:]


def _apply(copy: str, m: Mutant) -> str:
  """Writes the mutant into the copy; returns the file's original text."""
  path = os.path.join(copy, m.path)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  mutated = text
  for original, replacement in m.edits:
    mutated = mutated.replace(original, replacement, 1)
  with open(path, "w", encoding="utf-8") as f:
    f.write(mutated)
  return text


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", help="run only these mutants")
  parser.add_argument("--list", action="store_true", help="list the mutants and exit")
  parser.add_argument("--tests-from", metavar="REV", help="run the test files of git revision REV instead")
  parser.add_argument("--skip-baseline", action="store_true", help="do not first run the tests unmutated")
  parser.add_argument("--verbose", action="store_true", help="print the end of each mutant's test output")
  parser.add_argument("--quiet", action="store_true", help="print only the summary line (and errors)")
  args = parser.parse_args(argv)
  by_name = {m.name: m for m in MUTANTS}
  unknown = [n for n in args.names if n not in by_name]
  if unknown or len(by_name) != len(MUTANTS):
    print(f"error: unknown or repeated mutant names: {', '.join(unknown) or 'a name is repeated'}", file=sys.stderr)
    return 2
  mutants = [by_name[n] for n in args.names] if args.names else list(MUTANTS)
  if args.list:
    for m in mutants:
      print(f"{m.name:50s} {m.path:32s} {m.why}")
    return 0
  rotten = stale(mutants)
  if rotten:
    print("\n".join(rotten), file=sys.stderr)
    print(f"error: mutation check: {len(rotten)} mutant edit(s) no longer match the code exactly once; update "
          "tests/mutants.py", file=sys.stderr)
    return 1
  start = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="ae_jax_mutants_") as tmp:
    copy = os.path.join(tmp, "repo")
    _copy(ROOT, copy)
    if args.tests_from:
      _tests_from(ROOT, args.tests_from, copy)
    # The copy's ae_jax, also for the subprocesses tests start; no .pyc that a same-size mutant could reuse.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (copy, os.environ.get("PYTHONPATH")) if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run([sys.executable, "-c", "import ae_jax; print(ae_jax.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(copy):
      print(f"error: mutation check: the copy imports ae_jax from {where}, not from {copy}", file=sys.stderr)
      return 1
    selections = {m.name: _selection(m, copy, bool(args.tests_from)) for m in mutants}
    if not args.skip_baseline:
      union = list(dict.fromkeys(t for tests in selections.values() for t in tests))
      rc, out = _pytest(copy, union, env)
      if rc != 0:
        print(out, file=sys.stderr)
        print(f"error: mutation check: the mutants' tests fail without any mutant (pytest exit code {rc})",
              file=sys.stderr)
        return 1
      if not args.quiet:
        print(f"baseline: the {len(union)} test selections pass unmutated ({time.perf_counter() - start:.0f} s)")
    survivors, errors = [], []
    for m in mutants:
      tests, began = selections[m.name], time.perf_counter()
      if not tests:
        rc, out = 0, "no test file of this mutant exists in those tests"
      else:
        original = _apply(copy, m)
        try:
          rc, out = _pytest(copy, tests, env)
        finally:
          with open(os.path.join(copy, m.path), "w", encoding="utf-8") as f:
            f.write(original)
      verdict = {0: "SURVIVED", 1: "caught", 2: "caught (collection)", None: "caught (timeout)"}.get(rc, "ERROR")
      if not args.quiet or rc not in (0, 1):
        print(f"{verdict:20s} {m.name:50s} {time.perf_counter() - began:5.1f} s", flush=True)
      if args.verbose:
        print("  " + "\n  ".join(out.strip().splitlines()[-12:]), flush=True)
      if rc == 0:
        survivors.append(m.name)
      elif rc not in (1, 2, None):  # pytest's usage errors (4: a node id not found) or no tests (5).
        errors.append(f"{m.name}: pytest exit code {rc}: {out.strip().splitlines()[-1:]}")
  seconds = time.perf_counter() - start
  caught = len(mutants) - len(survivors) - len(errors)
  print(f"mutation check: {caught} of {len(mutants)} mutants caught ({100 * caught / len(mutants):.0f}%) in "
        f"{seconds:.0f} s" + (f", against the tests of {args.tests_from}" if args.tests_from else ""))
  for line in errors:
    print(f"error: {line}", file=sys.stderr)
  if survivors or errors:
    print(f"error: mutation check: {len(survivors)} of {len(mutants)} mutants survived"
          + (f": {', '.join(survivors)}" if survivors else "") + (f"; {len(errors)} could not run" if errors else ""),
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
