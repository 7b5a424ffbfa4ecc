"""Command line: ``onnes <stage> <action> ...``; the Snakemake rules call exactly this.

Every stage runs without Snakemake too, e.g.::

    onnes data fetch --dataset mp20 --cache resources/data --mirror ../shared/data
    onnes data curate --dataset mp20 --cache resources/data --out-dir results/x/data/mp20
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from onnes import __version__
from onnes import config as cfg

log = logging.getLogger("onnes")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="campaign config YAML (validated; defaults filled)")
    group.add_argument("--settings", help="config subset as JSON (what the Snakemake rules pass)")


def _load_config(args: argparse.Namespace) -> dict:
    if getattr(args, "settings", None):
        return cfg.parse_settings(args.settings)
    return cfg.load(getattr(args, "config", None))


def _named(items: list[str] | None) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict, in the order given; a user error without '='."""
    named = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise cfg.ConfigError(f"expected NAME=VALUE, got '{item}'")
        named[name] = value
    return named


def _named_tables(items: list[str]) -> dict:
    """Crystal tables from ``NAME=PATH`` arguments, keyed by name."""
    from onnes.crystals import read_table

    return {name: read_table(path) for name, path in _named(items).items()}


# -- report -------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> None:
    from onnes.report.build import ReportInputs, write_report

    write_report(ReportInputs(
        results=args.results, out_dir=args.out_dir, config=_load_config(args), sources=args.sources,
        models=args.models or [], raw_files=args.raw_files or [], cache=args.cache, repo=args.repo,
        tc_reference=args.tc_reference, structure_reference=args.structure_reference, summary=args.summary,
        steering=args.steering, predictor_metrics=args.predictor_metrics, held_out=args.held_out, dft=args.dft,
        hull_references=args.hull_references))


# -- dft ----------------------------------------------------------------------------


def _dft_cp2k_data(args: argparse.Namespace) -> None:
    from onnes.dft.cp2k import prepare_data_dir

    print(prepare_data_dir(args.source, args.out))


def _dft_select(args: argparse.Namespace) -> None:
    from onnes.crystals import write_table
    from onnes.dft.selection import select_candidates
    from onnes.dft.settings import DftSettings

    settings = DftSettings.from_config(_load_config(args))
    picked = select_candidates(_named_tables(args.ranked), settings, args.cp2k_data)
    write_table(picked, args.out)
    log.info("%d candidates for DFT, %d passed over", (picked.dft_slot >= 0).sum(), (picked.dft_slot < 0).sum())


def _dft_run(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table
    from onnes.dft.runner import run_slot
    from onnes.dft.settings import DftSettings
    from onnes.io import write_json

    config = _load_config(args)
    hull = known = None
    if args.references and args.elements and args.known:
        from onnes.dft.local_hull import known_by_id
        from onnes.screen.hull import ConvexHull

        hull, known = ConvexHull.from_files(args.references, args.elements), known_by_id(read_table(args.known))
    record = run_slot(read_table(args.candidates), args.slot, DftSettings.from_config(config), args.work_root,
                      config["dft"]["resources"]["threads"], args.cp2k_data, args.launcher, hull, known)
    write_json(args.out, record)
    log.info("slot %d: %s %s", args.slot, record.get("id", "-"), record["dft_status"])


def _dft_gather(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.dft.results import gather
    from onnes.io import read_json

    hull = None
    if args.references and args.elements:
        from onnes.screen.hull import ConvexHull

        hull = ConvexHull.from_files(args.references, args.elements)
    table = gather(read_table(args.candidates), [read_json(p) for p in args.results], hull)
    write_table(table, args.out)
    log.info("dft: %s", table.dft_status.value_counts().to_dict())


def _dft_feedback(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.dft.feedback import feed_back
    from onnes.io import read_parquet, write_json
    from onnes.screen.hull import elemental_potentials

    dft_tables = {int(k): read_table(path) for k, path in _named(args.dft).items()}
    references, known, summary = feed_back(read_parquet(args.references), read_table(args.known), dft_tables,
                                           elemental_potentials(args.elements))
    write_table(references, args.out_references)
    write_table(known, args.out_known)
    write_json(args.summary, summary)
    log.info("feedback from rounds %s: %d phases known, %d on the hull (%d below it)", summary["rounds"],
             summary["known_added"], summary["hull_entries_added"], summary["moves_hull"])


# -- data ---------------------------------------------------------------------------


def _data_fetch(args: argparse.Namespace) -> None:
    from onnes.data.fetch import fetch
    from onnes.catalogue import DATASET_FILES

    paths = list(args.files)
    for dataset in args.dataset or []:
        paths += [p for p in DATASET_FILES[dataset] if p not in paths]
    if not paths:
        raise cfg.ConfigError("name files to fetch, or --dataset")
    for path in paths:
        target = fetch(path, args.cache, args.mirror)
        print(target)


def _data_curate(args: argparse.Namespace) -> None:
    from onnes.crystals import write_table
    from onnes.data.curate import curate
    from onnes.io import write_json

    config = _load_config(args)
    out = Path(args.out_dir)
    result = curate(args.dataset, args.cache, config["data"], workers=args.threads)
    write_table(result.dropped, out / "dropped.parquet")
    write_table(result.kept, out / "curated.parquet")
    write_json(out / "curation.json", result.report)
    log.info(
        "%s: %d records in, %d kept, dropped %s (%.1f s)",
        args.dataset,
        result.report["records_in"],
        result.report["kept"],
        result.report["dropped"],
        result.report["timing_s"]["total"],
    )


def _data_import(args: argparse.Namespace) -> None:
    from onnes.crystals import write_table
    from onnes.data.importer import import_job, import_structures
    from onnes.io import write_json

    job = import_job(_load_config(args), inputs=args.inputs, dataset=args.dataset, candidates=args.candidates,
                     source=args.source, fmt=args.format, labels=args.labels, max_atoms=args.max_atoms,
                     keep_duplicates=args.keep_duplicates, workers=args.threads)
    result = import_structures(job.inputs, job.settings, job.labels)
    out = Path(args.out_dir)
    write_table(result.dropped, out / "dropped.parquet")
    write_json(out / "curation.json", result.report)
    write_table(result.kept, out / args.table_name)  # last: the rule's main output
    report = result.report
    log.info("%s: %d records from %d files, %d kept, dropped %s -> %s", job.settings.source, report["records_in"],
             report["files"], report["kept"], report["dropped"], out / args.table_name)


def _data_combine(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.data.combine import combine
    from onnes.io import write_json

    config = _load_config(args)
    if args.dataset not in config["data"]["combined"]:
        raise cfg.ConfigError(f"'{args.dataset}' is not a combined data set (data.combined)")
    entry = config["data"]["combined"][args.dataset]
    given = _named(args.members)
    if sorted(given) != sorted(entry["datasets"]):
        raise cfg.ConfigError(f"{args.dataset}: --member names {sorted(given)} are not data.combined."
                              f"{args.dataset}.datasets {entry['datasets']}")
    members = {name: read_table(given[name]) for name in entry["datasets"]}
    result = combine(args.dataset, members, config["data"]["dedup"], entry["max_atoms"], workers=args.threads)
    out = Path(args.out_dir)
    write_table(result.dropped, out / "dropped.parquet")
    write_json(out / "curation.json", result.report)
    write_table(result.kept, out / "curated.parquet")  # last: the rule's main output
    log.info("%s: %d rows from %s, %d kept (by member %s), dropped %s", args.dataset, result.report["records_in"],
             result.report["combined_from"], result.report["kept"], result.report["kept_by_member"],
             result.report["dropped"])


def _data_split(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.data.split import split_table

    config = _load_config(args)
    settings = cfg.dataset_settings(config["data"], args.dataset)
    table = read_table(args.input, crystal=False)  # SuperCon's table holds compositions only
    parts = split_table(table, settings["split_by"], config["data"]["split"], config["seed"], args.dataset)
    for name, part in parts.items():
        write_table(part, Path(args.out_dir) / f"{name}.parquet")
    log.info("%s: %s", args.dataset, {k: len(v) for k, v in parts.items()})


def _data_summarize(args: argparse.Namespace) -> None:
    from onnes.data.curate import summarize
    from onnes.io import read_json, write_json

    write_json(args.out, summarize([read_json(p) for p in args.reports]))


def _data_export(args: argparse.Namespace) -> None:
    from onnes import crystals
    from onnes.data.export import export_table
    from onnes.io import write_json

    result = export_table(crystals.read_table(args.table), args.format, args.out)
    if args.report:
        write_json(args.report, result.report(args.format))
    log.info("wrote %d structures as %s to %s; skipped %d %s", len(result.written), args.format, args.out,
             len(result.skipped), result.report(args.format)["skipped_by_reason"] or "")


# -- models ---------------------------------------------------------------------------


def _model_settings(config: dict, name: str) -> dict:
    try:
        return config["models"][name]
    except KeyError:
        raise cfg.ConfigError(f"no model '{name}' under config key 'models' (have: {sorted(config['models'])})") from None


def _train(args: argparse.Namespace) -> None:
    from onnes.train.loop import train

    config = _load_config(args)
    result = train(_model_settings(config, args.model), args.model, args.train, args.val, args.out_dir,
                   config["seed"], max_steps=args.max_steps, base_checkpoint=args.base, pairs_path=args.pairs)
    log.info("%s: trained to step %d", args.model, result["step"])


def _sample(args: argparse.Namespace) -> None:
    from onnes.sampling import sample_shard

    config = _load_config(args)
    settings = _model_settings(config, args.model) if args.model else None
    sample_shard(args.checkpoint, args.shard, args.out, config["seed"], settings, name=args.model)


def _sample_gather(args: argparse.Namespace) -> None:
    from onnes.sampling import gather

    summary = gather(args.shards, args.out, args.summary)
    log.info("gathered %d structures, %.1f %% structurally valid", summary["count"],
             100 * summary["valid_struct_fraction"])


def _sample_csp(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table
    from onnes.sampling import sample_csp

    config = _load_config(args)
    table = sample_csp(args.checkpoint, read_table(args.reference), config["screen"]["metrics"]["csp_structures"],
                       args.out, config["seed"], _model_settings(config, args.model), name=args.model)
    log.info("structure prediction: %d structures", len(table))


def _sample_pairs(args: argparse.Namespace) -> None:
    from onnes.sampling import sample_pairs

    config = _load_config(args)
    entry = _model_settings(config, args.model)
    source = entry["distill"]["source"]
    if not source:
        raise cfg.ConfigError(f"config key 'models.{args.model}.distill.source' is not set: nothing to pair")
    summary = sample_pairs(args.checkpoint, args.out, config["seed"], _model_settings(config, source),
                           entry["distill"], args.model)
    log.info("%s: %d reflow pairs from %s's ODE (%d steps) in %.0f s", args.model, summary["pairs"], source,
             summary["teacher_steps"], summary["seconds"])


# -- tc ---------------------------------------------------------------------------------


def _tc_train(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table
    from onnes.io import read_parquet
    from onnes.tc.predictor import train_and_evaluate, training_table

    config = _load_config(args)
    settings = config["tc"]["predictor"]
    supercon = read_parquet(args.supercon) if args.supercon else None
    structures = read_table(args.structures) if args.structures else None
    dft = read_parquet(args.dft) if args.dft else None
    table = training_table(supercon, structures, dft, settings["negatives"], settings["pressure"] == "ambient")
    metrics = train_and_evaluate(table, settings, config["seed"], args.out_dir, dft)
    regression, first = metrics["regression_superconductors"], next(iter(metrics["classification"].values()))
    log.info("Tc predictor (held out, grouped by composition, %d rows): superconducting accuracy %.3f; "
             "Tc of superconductors R2 %.3f, MAE %.2f K", metrics["test_rows"], first["accuracy"],
             regression["r2"], regression["mae"])


def _tc_rank(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.tc.predictor import TcPredictor
    from onnes.tc.ranking import predict_candidates, rank

    config = _load_config(args)
    predicted = predict_candidates(read_table(args.screened), TcPredictor.load(args.predictor))
    ranked = rank(predicted, config["tc"]["rank"])
    write_table(predicted, args.predicted)
    write_table(ranked, args.out)
    log.info("%d candidates ranked (of %d screened)", len(ranked), len(predicted))


def _tc_predict(args: argparse.Namespace) -> None:
    from onnes.tc.lookup import as_text, formula_table, predict_formulas
    from onnes.tc.predictor import TcPredictor

    predicted = predict_formulas(formula_table(args.formulas, args.csv, args.table), TcPredictor.load(args.predictor))
    text = as_text(predicted, args.json or (args.out is not None and args.out.suffix == ".json"))
    if args.out:
        from onnes.io import atomic_path

        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    unreadable = predicted.tc_pred_mean.isna().sum()
    if unreadable:
        log.warning("%d rows without a prediction (a formula that names no composition)", unreadable)


def _tc_reward_set(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.io import write_json
    from onnes.tc.reward import reward_set

    config = _load_config(args)
    settings = _model_settings(config, args.model)["reward"]
    data = read_table(args.data) if args.data else None
    train, val, summary = reward_set(read_table(args.predicted), settings, config["seed"], data)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_table(train, args.out_dir / "train.parquet")
    write_table(val, args.out_dir / "val.parquet")
    write_json(args.out_dir / "reward.json", summary)
    log.info("%s: %d of %d samples pass the gates; %d training draws of %d distinct ones, %d validation rows "
             "(temperature %.2f, effective sample size %.1f)", args.model, summary["counts_after_gates"]["hull"],
             summary["counts_after_gates"]["generated"], len(train), summary["distinct_in_train"], len(val),
             summary["temperature_used"], summary["effective_sample_size"])


def _tc_compare(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table
    from onnes.io import atomic_path, write_json
    from onnes.tc.steering import compare

    config = _load_config(args)
    tables = _named_tables(args.predicted)
    pairs = _named(args.pairs)
    training = read_table(args.training) if args.training else None
    frame = compare(tables, training, config["tc"]["steering"]["thresholds"], pairs)
    with atomic_path(args.out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4g")
    write_json(args.out.with_suffix(".json"), frame.to_dict("records"))


def _baseline(args: argparse.Namespace) -> None:
    from onnes.baselines import sample_baseline
    from onnes.crystals import read_table, write_table

    table = sample_baseline(args.name, read_table(args.reference), args.num_samples, _load_config(args),
                            workers=args.threads)
    write_table(table, args.out)
    log.info("%s baseline: %d of %d structures", args.name, len(table), args.num_samples)


def _screen_match(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.io import write_json
    from onnes.screen.funnel import screen

    config = _load_config(args)
    table, funnel = screen(read_table(args.samples), read_table(args.reference), config["screen"],
                           workers=args.threads)
    write_table(table, args.out)
    if args.funnel:
        write_json(args.funnel, funnel)
    log.info("funnel: %s", funnel["steps"])


def _screen_hull_references(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.screen.hull import build_references

    curated = {name: read_table(path) for name, path in _named(args.curated).items()}
    refs = build_references(args.mp20, curated)
    write_table(refs, args.out)
    log.info("hull references: %s", refs.source.value_counts().to_dict())


def _screen_known(args: argparse.Namespace) -> None:
    from onnes.crystals import write_table
    from onnes.screen.stages import known_structures

    write_table(known_structures(_named(args.tables)), args.out)


def _screen_stability(args: argparse.Namespace) -> None:
    from onnes.screen.stages import stability_stage

    stability_stage(args.matched, args.relaxed, args.references, args.elements, args.train, args.known,
                    _load_config(args), args.out, args.threads)


def _screen_confirm(args: argparse.Namespace) -> None:
    from onnes.screen.relax import confirm_stage

    result = confirm_stage(args.table, args.out, _load_config(args)["confirm"], (args.references, args.elements))
    log.info("confirmation: %s", result.relax_status.value_counts().to_dict())


def _screen_finish(args: argparse.Namespace) -> None:
    from onnes.screen.stages import finish_stage

    finish_stage(args.stability, args.references, args.elements, args.train, args.known, _load_config(args),
                 args.out, args.funnel, args.confirmed)


def _screen_fingerprints(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table, write_table
    from onnes.screen.metrics import fingerprints

    config = _load_config(args)
    table = read_table(args.table)
    count = config["screen"]["metrics"]["reference_structures"]
    write_table(fingerprints(table if count is None else table.head(count), args.threads), args.out)


def _screen_metrics(args: argparse.Namespace) -> None:
    from onnes.crystals import read_table
    from onnes.io import read_parquet, write_json
    from onnes.screen.metrics import generation_metrics

    config = _load_config(args)
    result = generation_metrics(read_table(args.screened), read_table(args.reference),
                                read_parquet(args.reference_fingerprints), config["screen"]["metrics"],
                                config["seed"], args.threads, read_table(args.csp) if args.csp else None)
    write_json(args.out, result)
    log.info("metrics: %s", result)


def _screen_summary(args: argparse.Namespace) -> None:
    from onnes.io import atomic_path
    from onnes.screen.summary import summarize

    table = summarize(args.names, args.funnels, args.metrics)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    log.info("summary:\n%s", table.to_string(index=False))


def _relax(args: argparse.Namespace) -> None:
    from onnes.screen.relax import relax_stage

    hull_files = (args.references, args.elements) if args.references and args.elements else None
    result = relax_stage(args.table, args.out, _load_config(args)["relax"], args.shard, hull_files)
    log.info("relaxation: %s", result.relax_status.value_counts().to_dict())


def _config_show(args: argparse.Namespace) -> None:
    overrides = dict(_parse_override(item) for item in args.set or [])
    config = cfg.load(args.config, overrides=_nest(overrides))
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


def _parse_override(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise cfg.ConfigError(f"--set expects key=value, got '{item}'")
    return key, yaml.safe_load(value)


def _nest(flat: dict[str, object]) -> dict:
    nested: dict = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _add_relax_parser(actions, help_text: str) -> None:
    relax = actions.add_parser("relax", help=help_text)
    relax.add_argument("--table", type=Path, required=True, help="crystal table; a screened one relaxes the "
                       "rows past relax.select")
    relax.add_argument("--out", type=Path, required=True, help="relaxed.parquet (work files beside it)")
    relax.add_argument("--shard", type=int, default=0, help="which of relax.shards blocks to relax")
    relax.add_argument("--references", type=Path, help="hull_references.parquet: with --elements, structures "
                       "far above the hull are rejected early (relax.reject_above_hull)")
    relax.add_argument("--elements", type=Path, help="MP elemental reference entries (json.gz)")
    _add_config_options(relax)
    relax.set_defaults(func=_relax)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnes", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"onnes {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    stages = parser.add_subparsers(dest="stage", required=True)

    config = stages.add_parser("config", help="validate a config file and print it with defaults")
    config.add_argument("config", type=Path, nargs="?", help="config YAML (default: schema defaults)")
    config.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. data.split.train=0.7")
    config.set_defaults(func=_config_show)

    data = stages.add_parser("data", help="fetch, curate, split and export crystal data")
    actions = data.add_subparsers(dest="action", required=True)

    fetch = actions.add_parser("fetch", help="copy (mirror) or download (upstream) raw files, checksummed")
    fetch.add_argument("files", nargs="*", help="registry paths, e.g. mp20/pilot_train.csv.gz")
    fetch.add_argument("--dataset", action="append", help="fetch every file of this data set")
    fetch.add_argument("--cache", type=Path, required=True, help="cache directory")
    fetch.add_argument("--mirror", type=Path, help="mirror directory; omit to download from upstream")
    fetch.set_defaults(func=_data_fetch)

    curate = actions.add_parser("curate", help="parse, filter, label and deduplicate one data set")
    curate.add_argument("--dataset", required=True)
    curate.add_argument("--cache", type=Path, required=True)
    curate.add_argument("--out-dir", type=Path, required=True)
    curate.add_argument("--threads", type=int, default=1, help="worker processes")
    _add_config_options(curate)
    curate.set_defaults(func=_data_curate)

    imp = actions.add_parser("import", help="a user's CIF, POSCAR, extxyz, ASE db or pymatgen JSON files -> a "
                             "crystal table, through curation's checks (every drop counted with a reason)")
    imp.add_argument("inputs", nargs="*", help="files, folders (searched recursively) or quoted globs")
    imp.add_argument("--out-dir", type=Path, required=True, help="writes the table (--table-name), "
                     "dropped.parquet and curation.json")
    imp.add_argument("--table-name", default="curated.parquet", help="file name of the kept rows (default "
                     "curated.parquet)")
    imp.add_argument("--format", choices=["auto", "cif", "poscar", "extxyz", "ase-db", "pymatgen-json"],
                     help="default: from file names")
    imp.add_argument("--labels", type=Path, help="CSV with an 'id' column (file stem, or the id a file gives) and "
                     "label columns, e.g. tc_K")
    imp.add_argument("--source", default="user", help="value of the table's source column")
    imp.add_argument("--max-atoms", type=int, help="drop cells with more sites (default 200)")
    imp.add_argument("--keep-duplicates", action="store_true", help="skip StructureMatcher de-duplication")
    imp.add_argument("--threads", type=int, default=1, help="worker processes")
    which = imp.add_mutually_exclusive_group()
    which.add_argument("--dataset", help="import the config's data.custom.<name> (paths, format, labels, max_atoms)")
    which.add_argument("--candidates", help="import the config's candidates.<name> (no de-duplication)")
    _add_config_options(imp)
    imp.set_defaults(func=_data_import)

    comb = actions.add_parser("combine", help="union of curated structure sets (data.combined.<name>), "
                              "de-duplicated across them by id and StructureMatcher")
    comb.add_argument("--dataset", required=True, help="the name under data.combined")
    comb.add_argument("--member", dest="members", action="append", required=True, metavar="NAME=CURATED",
                      help="a member's curated.parquet, once per member")
    comb.add_argument("--out-dir", type=Path, required=True, help="writes curated.parquet, dropped.parquet and "
                      "curation.json")
    comb.add_argument("--threads", type=int, default=1, help="worker processes")
    _add_config_options(comb)
    comb.set_defaults(func=_data_combine)

    split = actions.add_parser("split", help="seeded train/val/test split of a curated table")
    split.add_argument("--dataset", required=True)
    split.add_argument("--input", type=Path, required=True, help="curated.parquet")
    split.add_argument("--out-dir", type=Path, required=True)
    _add_config_options(split)
    split.set_defaults(func=_data_split)

    summarize = actions.add_parser("summarize", help="merge per-data-set reports into curation.json")
    summarize.add_argument("reports", nargs="+", type=Path)
    summarize.add_argument("--out", type=Path, required=True)
    summarize.set_defaults(func=_data_summarize)

    export = actions.add_parser("export", help="write a crystal table as CIF (P1 or symmetrised), POSCAR, extxyz, "
                                "an ASE database or pymatgen JSON; bad rows are skipped with a reason")
    export.add_argument("--table", type=Path, required=True)
    export.add_argument("--format", choices=["cif", "cif-symmetrized", "poscar", "extxyz", "ase-db", "pymatgen-json"],
                        required=True)
    export.add_argument("--out", type=Path, required=True, help="a new folder (cif, cif-symmetrized, poscar: one "
                        "file per row and export.json) or a file (extxyz, ase-db, pymatgen-json)")
    export.add_argument("--report", type=Path, help="also write the written/skipped counts as JSON here")
    export.set_defaults(func=_data_export)
    train = stages.add_parser("train", help="train a generative model (torchrun for several ranks)")
    train.add_argument("--model", required=True, help="model name under the config key 'models'")
    train.add_argument("--train", type=Path, required=True, help="train.parquet (crystal table)")
    train.add_argument("--val", type=Path, required=True, help="val.parquet")
    train.add_argument("--out-dir", type=Path, required=True)
    train.add_argument("--max-steps", type=int, help="stop early with resumable state (testing)")
    train.add_argument("--base", type=Path, help="pretrained checkpoint of adapter.base, reward.source or "
                       "distill.source")
    train.add_argument("--pairs", type=Path, help="reflow pairs of distill.source (onnes sample pairs)")
    _add_config_options(train)
    train.set_defaults(func=_train)

    sample = stages.add_parser("sample", help="sample one shard from a trained model, or gather shards")
    sample_actions = sample.add_subparsers(dest="action", required=True)
    shard = sample_actions.add_parser("shard", help="generate one shard")
    shard.add_argument("--checkpoint", type=Path, required=True, help="last.ckpt")
    shard.add_argument("--shard", type=int, required=True)
    shard.add_argument("--out", type=Path, required=True)
    shard.add_argument("--model", help="take sampling settings from this config model (default: checkpoint's)")
    _add_config_options(shard)
    shard.set_defaults(func=_sample)
    gather = sample_actions.add_parser("gather", help="concatenate shards; write a summary with validity")
    gather.add_argument("shards", nargs="+", type=Path)
    gather.add_argument("--out", type=Path, required=True)
    gather.add_argument("--summary", type=Path, required=True)
    gather.set_defaults(func=_sample_gather)
    csp = sample_actions.add_parser("csp", help="structure prediction for test compositions (match-rate metric)")
    csp.add_argument("--checkpoint", type=Path, required=True)
    csp.add_argument("--reference", type=Path, required=True, help="test.parquet: compositions and ground truth")
    csp.add_argument("--model", required=True)
    csp.add_argument("--out", type=Path, required=True)
    _add_config_options(csp)
    csp.set_defaults(func=_sample_csp)
    pairs = sample_actions.add_parser("pairs", help="reflow pairs: the distill.source's ODE samples with their "
                                      "prior draws")
    pairs.add_argument("--checkpoint", type=Path, required=True, help="the source's last.ckpt")
    pairs.add_argument("--model", required=True, help="the distilled model (its distill block says how many)")
    pairs.add_argument("--out", type=Path, required=True, help="pairs.pt")
    _add_config_options(pairs)
    pairs.set_defaults(func=_sample_pairs)

    baseline = stages.add_parser("baseline", help="sample a baseline (pyxtal, substitution)")
    baseline.add_argument("name", choices=["pyxtal", "substitution"])
    baseline.add_argument("--reference", type=Path, required=True, help="training structures (compositions, parents)")
    baseline.add_argument("--num-samples", type=int, required=True)
    baseline.add_argument("--out", type=Path, required=True)
    baseline.add_argument("--threads", type=int, default=1, help="worker processes (PyXtal)")
    _add_config_options(baseline)
    baseline.set_defaults(func=_baseline)

    screen = stages.add_parser("screen", help="the screening funnel of generated structures")
    screen_actions = screen.add_subparsers(dest="action", required=True)
    match = screen_actions.add_parser("match", help="validity, uniqueness and novelty")
    match.add_argument("--samples", type=Path, required=True, help="samples.parquet (crystal table)")
    match.add_argument("--reference", type=Path, required=True, help="training structures, for novelty")
    match.add_argument("--out", type=Path, required=True, help="matched.parquet")
    match.add_argument("--funnel", type=Path, help="funnel.json of these first steps")
    match.add_argument("--threads", type=int, default=1)
    _add_config_options(match)
    match.set_defaults(func=_screen_match)
    refs = screen_actions.add_parser("hull-references", help="reference formation energies for the convex hull")
    refs.add_argument("--mp20", type=Path, required=True, help="hull_refs/mp20_formation_energies.parquet")
    refs.add_argument("--curated", nargs="*", help="NAME=curated.parquet with e_form_per_atom (mpts52, wbm)")
    refs.add_argument("--out", type=Path, required=True)
    refs.set_defaults(func=_screen_hull_references)
    known = screen_actions.add_parser("known", help="every crystal the campaign knows, for strict novelty")
    known.add_argument("--tables", nargs="+", required=True, help="DATASET/SPLIT=path.parquet")
    known.add_argument("--out", type=Path, required=True)
    known.set_defaults(func=_screen_known)
    stab = screen_actions.add_parser("stability", help="pre-relaxation verdicts: hull, converged, novelty on the "
                                     "relaxed geometry, SUN and MSUN")
    stab.add_argument("--matched", type=Path, required=True)
    stab.add_argument("--relaxed", type=Path, nargs="+", required=True, help="relaxation shards")
    stab.add_argument("--references", type=Path, required=True, help="hull references (hull-references)")
    stab.add_argument("--elements", type=Path, required=True, help="MP elemental reference entries (JSON)")
    stab.add_argument("--train", type=Path, required=True, help="training split (literature novelty)")
    stab.add_argument("--known", type=Path, required=True, help="every known crystal (screen known)")
    stab.add_argument("--out", type=Path, required=True, help="stability.parquet")
    stab.add_argument("--threads", type=int, default=1)
    _add_config_options(stab)
    stab.set_defaults(func=_screen_stability)
    conf = screen_actions.add_parser("confirm", help="relax the pre-relaxation's MSUN rows again with the "
                                     "confirming MLIP (confirm.calculator; resumable)")
    conf.add_argument("--table", type=Path, required=True, help="stability.parquet")
    conf.add_argument("--out", type=Path, required=True, help="confirm.parquet (work files beside it)")
    conf.add_argument("--references", type=Path, required=True)
    conf.add_argument("--elements", type=Path, required=True)
    _add_config_options(conf)
    conf.set_defaults(func=_screen_confirm)
    fin = screen_actions.add_parser("finish", help="confirmed stability, SUN and MSUN with intervals, full funnel "
                                    "and its protocol")
    fin.add_argument("--stability", type=Path, required=True, help="stability.parquet")
    fin.add_argument("--confirmed", type=Path, help="confirm.parquet (omit without a confirming MLIP)")
    fin.add_argument("--references", type=Path, required=True, help="hull references (hull-references)")
    fin.add_argument("--elements", type=Path, required=True, help="MP elemental reference entries (JSON)")
    fin.add_argument("--train", type=Path, required=True, help="training split (its size, for the protocol)")
    fin.add_argument("--known", type=Path, required=True, help="every known crystal (its size, for the protocol)")
    fin.add_argument("--out", type=Path, required=True, help="screened.parquet")
    fin.add_argument("--funnel", type=Path, required=True)
    _add_config_options(fin)
    fin.set_defaults(func=_screen_finish)
    fps = screen_actions.add_parser("fingerprints", help="CrystalNN and Magpie fingerprints of a reference table")
    fps.add_argument("--table", type=Path, required=True)
    fps.add_argument("--out", type=Path, required=True)
    fps.add_argument("--threads", type=int, default=1)
    _add_config_options(fps)
    fps.set_defaults(func=_screen_fingerprints)
    met = screen_actions.add_parser("metrics", help="coverage, Wasserstein distances, structure-prediction match")
    met.add_argument("--screened", type=Path, required=True)
    met.add_argument("--reference", type=Path, required=True, help="test.parquet")
    met.add_argument("--reference-fingerprints", type=Path, required=True)
    met.add_argument("--csp", type=Path, help="structure-prediction samples with target_id")
    met.add_argument("--out", type=Path, required=True)
    met.add_argument("--threads", type=int, default=1)
    _add_config_options(met)
    met.set_defaults(func=_screen_metrics)

    summ = screen_actions.add_parser("summary", help="one table of funnel and metrics per model and baseline")
    summ.add_argument("--names", nargs="+", required=True)
    summ.add_argument("--funnels", type=Path, nargs="+", required=True)
    summ.add_argument("--metrics", type=Path, nargs="+", required=True)
    summ.add_argument("--out", type=Path, required=True, help="summary.csv")
    summ.set_defaults(func=_screen_summary)

    tc = stages.add_parser("tc", help="Tc predictor, candidate ranking, steering comparison")
    tc_actions = tc.add_subparsers(dest="action", required=True)
    tc_train = tc_actions.add_parser("train", help="fit and evaluate the Tc predictor (held out by composition)")
    tc_train.add_argument("--supercon", type=Path, help="curated SuperCon table (formula, tc_K)")
    tc_train.add_argument("--structures", type=Path, help="curated 3DSC crystal table with tc_K")
    tc_train.add_argument("--dft", type=Path, help="MP DFT table (formula or pretty_formula, band_gap, e_above_hull): "
                          "band insulators as negatives, the metallicity gate")
    tc_train.add_argument("--out-dir", type=Path, required=True, help="model.json, domain.npz, metrics.json")
    _add_config_options(tc_train)
    tc_train.set_defaults(func=_tc_train)
    tc_rank = tc_actions.add_parser("rank", help="predict Tc of screened candidates and rank them")
    tc_rank.add_argument("--screened", type=Path, required=True)
    tc_rank.add_argument("--predictor", type=Path, required=True, help="directory written by `onnes tc train`")
    tc_rank.add_argument("--predicted", type=Path, required=True, help="every screened row with predictions")
    tc_rank.add_argument("--out", type=Path, required=True, help="ranked.parquet")
    _add_config_options(tc_rank)
    tc_rank.set_defaults(func=_tc_rank)
    tc_pred = tc_actions.add_parser("predict", help="predicted Tc (K) of formulas, a CSV of formulas or a crystal "
                                    "table: P(superconducting), P(Tc > T), expected Tc, conformal intervals, "
                                    "out-of-domain flag")
    tc_pred.add_argument("formulas", nargs="*", help="e.g. MgB2 YBa2Cu3O7 Nb3Sn")
    tc_pred.add_argument("--predictor", type=Path, required=True, help="directory written by `onnes tc train` "
                         "(results/{campaign}/tc/predictor)")
    tc_pred.add_argument("--csv", type=Path, help="a CSV of formulas (its formula column, else its first column)")
    tc_pred.add_argument("--table", type=Path, help="a crystal table (Parquet; formula column, or from its species)")
    tc_pred.add_argument("--json", action="store_true", help="JSON records instead of CSV")
    tc_pred.add_argument("--out", type=Path, help="output file, CSV or .json (default: standard output)")
    tc_pred.set_defaults(func=_tc_predict)

    tc_reward = tc_actions.add_parser("reward-set", help="the samples of a reward fine-tune's source that earn "
                                      "the reward (models.NAME.reward), as train/val crystal tables")
    tc_reward.add_argument("--model", required=True, help="the reward fine-tune's name under models")
    tc_reward.add_argument("--predicted", type=Path, required=True, help="the source's tc/{source}/predicted.parquet")
    tc_reward.add_argument("--out-dir", type=Path, required=True, help="train.parquet, val.parquet, reward.json")
    tc_reward.add_argument("--data", type=Path, help="the model's data set's training split, to mix in "
                           "(reward.mix_data > 0)")
    _add_config_options(tc_reward)
    tc_reward.set_defaults(func=_tc_reward_set)

    tc_cmp = tc_actions.add_parser("compare", help="predicted-Tc distributions per source (steering table)")
    tc_cmp.add_argument("--predicted", nargs="+", required=True, help="NAME=predicted.parquet")
    tc_cmp.add_argument("--pairs", nargs="*", help="STEERED=UNCONDITIONAL source pairs for the gain columns")
    tc_cmp.add_argument("--training", type=Path, help="training crystal table with measured tc_K")
    tc_cmp.add_argument("--out", type=Path, required=True, help="steering.csv (+ steering.json)")
    _add_config_options(tc_cmp)
    tc_cmp.set_defaults(func=_tc_compare)

    dft = stages.add_parser("dft", help="DFT verification of top-ranked candidates (atomate2 + jobflow)")
    dft_actions = dft.add_subparsers(dest="action", required=True)
    dft_data = dft_actions.add_parser("cp2k-data", help="pymatgen's per-element CP2K basis/potential directory")
    dft_data.add_argument("--source", type=Path, default=Path("/usr/share/cp2k"), help="CP2K data files")
    dft_data.add_argument("--out", type=Path, required=True)
    dft_data.set_defaults(func=_dft_cp2k_data)
    dft_select = dft_actions.add_parser("select", help="pool ranked candidates; give the best top_k a slot")
    dft_select.add_argument("--ranked", nargs="+", required=True, help="NAME=ranked.parquet")
    dft_select.add_argument("--cp2k-data", type=Path, help="directory from `onnes dft cp2k-data` (code cp2k)")
    dft_select.add_argument("--out", type=Path, required=True, help="candidates.parquet")
    _add_config_options(dft_select)
    dft_select.set_defaults(func=_dft_select)
    dft_run = dft_actions.add_parser("run", help="run one slot's flow with jobflow (retries, errors recorded)")
    dft_run.add_argument("--candidates", type=Path, required=True)
    dft_run.add_argument("--slot", type=int, required=True)
    dft_run.add_argument("--cp2k-data", type=Path)
    dft_run.add_argument("--launcher", help="MPI launcher put before the CP2K command (e.g. srun)")
    dft_run.add_argument("--work-root", type=Path, required=True,
                         help="the campaign's dft/ directory; calculations and JSON store go to SOURCE/ID/ below it")
    dft_run.add_argument("--references", type=Path, help="hull references (the local hull's decomposition)")
    dft_run.add_argument("--elements", type=Path, help="MP elemental reference entries")
    dft_run.add_argument("--known", type=Path, help="known structures (the decomposition products' structures)")
    dft_run.add_argument("--out", type=Path, required=True, help="the slot's record (JSON)")
    _add_config_options(dft_run)
    dft_run.set_defaults(func=_dft_run)
    dft_gather = dft_actions.add_parser("gather", help="dft.parquet from the slots' results")
    dft_gather.add_argument("--candidates", type=Path, required=True)
    dft_gather.add_argument("--results", type=Path, nargs="*", default=[])
    dft_gather.add_argument("--references", type=Path, help="hull references (VASP rows on the MP hull)")
    dft_gather.add_argument("--elements", type=Path, help="MP elemental reference entries")
    dft_gather.add_argument("--out", type=Path, required=True, help="dft.parquet")
    dft_gather.set_defaults(func=_dft_gather)

    dft_feedback = dft_actions.add_parser("feedback", help="a later round's hull references and known crystals: "
                                          "the campaign's plus earlier rounds' DFT phases")
    dft_feedback.add_argument("--references", type=Path, required=True, help="the campaign's hull references")
    dft_feedback.add_argument("--known", type=Path, required=True, help="the campaign's known structures")
    dft_feedback.add_argument("--elements", type=Path, required=True, help="MP elemental reference entries")
    dft_feedback.add_argument("--dft", nargs="*", default=[], help="ROUND=dft.parquet of each earlier round")
    dft_feedback.add_argument("--out-references", type=Path, required=True)
    dft_feedback.add_argument("--out-known", type=Path, required=True)
    dft_feedback.add_argument("--summary", type=Path, required=True, help="feedback.json")
    dft_feedback.set_defaults(func=_dft_feedback)

    report = stages.add_parser("report", help="the campaign page: funnel, figures, ranked candidates, provenance")
    report.add_argument("--results", type=Path, required=True, help="results/{campaign}")
    report.add_argument("--out-dir", type=Path, required=True, help="results/{campaign}/report")
    report.add_argument("--sources", nargs="+", required=True, help="models and baselines, in table order")
    report.add_argument("--models", nargs="*", help="models whose training curves to plot")
    report.add_argument("--raw-files", nargs="*", type=Path, help="raw data files to checksum")
    report.add_argument("--cache", type=Path, default=Path("resources/data"), help="data cache (names the files)")
    report.add_argument("--repo", type=Path, default=Path("."), help="workflow checkout (git commit)")
    report.add_argument("--tc-reference", type=Path, help="training table with measured tc_K")
    report.add_argument("--structure-reference", type=Path, help="training table for density and elements")
    report.add_argument("--summary", type=Path, help="screen/summary.csv (generation quality)")
    report.add_argument("--hull-references", type=Path, help="screen/hull_references.parquet (hull plots)")
    report.add_argument("--steering", type=Path, help="tc/steering.csv")
    report.add_argument("--predictor-metrics", type=Path, help="tc/predictor/metrics.json")
    report.add_argument("--held-out", type=Path, help="tc/predictor/held_out.csv (parity, calibration)")
    report.add_argument("--dft", type=Path, help="dft/dft.parquet")
    _add_config_options(report)
    report.set_defaults(func=_report)

    # the pre-relaxation is a screening step (onnes screen relax); "onnes relax" is kept as its alias
    _add_relax_parser(screen_actions, "batched MLIP pre-relaxation of a crystal table (relax.calculator; "
                      "resumable)")
    _add_relax_parser(stages, "alias of 'onnes screen relax'")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from onnes.data.fetch import ChecksumError, FetchError

    try:
        args.func(args)
    except (cfg.ConfigError, FetchError, ChecksumError) as exc:
        print(f"onnes: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
