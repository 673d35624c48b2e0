"""Coverage-guided fuzzing of the reader and the engine (atheris).

    python -m fuzz.seeds                                  # write the seed corpus once
    python -m fuzz.deid_fuzz fuzz/work/corpus fuzz/work/seeds -max_total_time=1800 \\
        -artifact_prefix=fuzz/work/artifacts/ [libFuzzer options]
    python -m fuzz.deid_fuzz --check FILE...              # run the property on given inputs

Each input goes the way an object goes in ``anon deidentify`` and the services, without
the database: ``shared.dicom.parse.parse``, the object's identity and patient key, the
site's filter, then ``shared.deid.engine.Engine`` with fixed pseudonyms and five rule sets:
the built-in profile with the default RICORD options, with every cleaning option, with
every retaining option, and RSNA's two default CTP scripts (``tests/data/ctp-scripts``).
The property:

- the input either de-identifies, or is refused with a ``RejectedObject`` that carries a
  reason; any other exception is a finding;
- the identifiers the PHI index stores hold no NUL character (PostgreSQL refuses it);
- the output can be read again by the reader;
- no output holds a value planted in the seeds (``fuzz.seeds.planted_strings``: the
  synthetic patients' PHI and the root of the original synthetic UIDs), except inside an
  attribute the profile keeps as it is (a mutation can move a planted value into, say,
  Slice Thickness; keeping that is the profile's rule, not a leak).

Findings are recorded by the harness itself, so one run goes on past them: the first input
of each distinct finding (exception class and where it was raised, or the property that
failed) is saved in ``$FUZZ_FINDINGS`` (default ``fuzz/work/findings``) with its traceback,
and ``counts.json`` there counts the inputs tried and each finding's occurrences. With
``FUZZ_RAISE=1`` findings propagate instead (libFuzzer then stops and saves a crash file).
``python -m fuzz.run`` runs this for a given time and sums up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import sys
import traceback
from pathlib import Path

try:
    import atheris
except ImportError:  # the property itself runs without it (--check, the test suite)
    atheris = None

with (atheris.instrument_imports(include=["shared"]) if atheris is not None
      else contextlib.nullcontext()):
    from shared.deid.context import Pseudonyms
    from shared.deid.ctp_filter import ObjectFilter
    from shared.deid.ctp_rules import compile_script
    from shared.deid.ctp_script import load_script
    from shared.deid.engine import Deidentified, Engine, NeedsIntegers, identity
    from shared.deid.options import ProfileOptions
    from shared.deid.profile import build_profile
    from shared.deid.rules import RuleSet
    from shared.dicom.errors import FilteredOut, RejectedObject
    from shared.dicom.parse import DicomObject, parse
    from shared.index.phi_index import Site, patient_key

from fuzz.leaks import leak, own_identifiers
from fuzz.seeds import planted_strings

SITE = Site(site_id="123456", secret=b"fuzzing-secret-not-for-production-32b")
PSEUDONYMS = Pseudonyms(
    patient_id="123456-000001",
    patient_name="123456-000001",
    date_offset_days=1234,
    accession_number="0000000000000001",
)
_SCRIPTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "ctp-scripts"
PROFILES: list[tuple[str, RuleSet]] = [
    ("ricord", build_profile(ProfileOptions.ricord())),
    ("cleaning", build_profile(ProfileOptions(
        clean_descriptors=True, clean_structured_content=True, clean_graphics=True,
    ))),
    ("retaining", build_profile(ProfileOptions(
        retain_safe_private=True, retain_uids=True, retain_device_identity=True,
        retain_institution_identity=True, retain_longitudinal_full_dates=True,
    ))),
    *(
        (f"script {path.stem}", compile_script(load_script(path), SITE.site_id))
        for path in sorted(_SCRIPTS.glob("*.script"))
    ),
]
ENGINES = [(name, rules, Engine(rules, SITE.secret)) for name, rules in PROFILES]
FILTER = ObjectFilter()
PLANTED = planted_strings()


class Finding(Exception):
    """The property does not hold for an input (no PHI in the message: the input's values
    are synthetic, but the message names tags and offsets only)."""


def _check_leaks(profile: str, rules: RuleSet, obj: DicomObject, output: bytes) -> None:
    problem = leak(rules, output, PLANTED, own_identifiers(obj))
    if problem:
        raise Finding(f"{profile}: {problem}")


def _deidentify(engine: Engine, obj: DicomObject) -> Deidentified:
    """As the pseudonymizer does: counter values the rules ask for (``@integer`` of a
    script) are allocated, then the engine runs again."""
    integers: dict[tuple[str, str], int] = {}
    for _ in range(3):
        try:
            return engine.deidentify(obj, PSEUDONYMS, integers)
        except NeedsIntegers as needed:
            for key in sorted(needed.keys):
                integers[key] = len(integers) + 1
    raise Finding("the rules keep asking for new counter values")


def _run(data: bytes) -> list[Deidentified]:
    try:
        obj = parse(data)
    except RejectedObject as exc:
        if not (isinstance(exc.reason, str) and exc.reason.strip()):
            raise Finding("a rejection without a reason") from None
        return []
    ident = identity(obj)
    for name in ident.__slots__:
        if "\x00" in getattr(ident, name):
            # The index (PostgreSQL text) cannot store it: the pipeline would retry the
            # object until it is dead-lettered, anon deidentify would stop.
            raise Finding(f"{name} holds a NUL character, which the PHI index cannot store")
    patient_key(ident.patient_id, ident.issuer_of_patient_id, ident.study_instance_uid)
    SITE.accession_pseudonym(ident.study_instance_uid, ident.accession_number.strip())
    # The services stop at a refusal of the filter; the engine is fuzzed on the object anyway.
    with contextlib.suppress(FilteredOut):
        FILTER.check(obj)
    results = []
    for profile, rules, engine in ENGINES:
        try:
            result = _deidentify(engine, obj)
        except RejectedObject as exc:
            if not (isinstance(exc.reason, str) and exc.reason.strip()):
                raise Finding(f"{profile}: a rejection without a reason") from None
            continue
        _check_leaks(profile, rules, obj, result.data)
        try:
            parse(result.data)
        except RejectedObject as exc:
            raise Finding(f"{profile}: the output cannot be read again: {exc.reason}") from None
        results.append(result)
    return results


FINDINGS = Path(os.environ.get("FUZZ_FINDINGS", Path(__file__).parent / "work" / "findings"))
RAISE = os.environ.get("FUZZ_RAISE") == "1"
_ROOT = str(Path(__file__).resolve().parent.parent)
_counts: dict[str, int] = {}
_tried = 0
_FLUSH_EVERY = 2000


def signature(exc: BaseException) -> str:
    """What identifies a finding: the property that failed, or the exception class with the
    innermost frame of the project and the innermost frame overall."""
    if isinstance(exc, Finding):
        return "Finding: " + re.sub(r"\bat byte \d+", "", str(exc))
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(_ROOT)
            and "/fuzz/" not in f.filename and "/.venv/" not in f.filename]
    where = [ours[-1]] if ours else []
    if frames and (not ours or frames[-1] is not ours[-1]):
        where.append(frames[-1])
    places = " < ".join(
        f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where)
    )
    return f"{exc.__class__.__name__} at {places}"


def _flush(run_id: str) -> None:
    FINDINGS.mkdir(parents=True, exist_ok=True)
    (FINDINGS / f"counts-{run_id}.json").write_text(
        json.dumps({"inputs": _tried, "findings": _counts}, indent=1) + "\n"
    )


_RUN_ID = f"{os.getpid()}"


def _record(data: bytes, exc: BaseException) -> None:
    sig = signature(exc)
    first = sig not in _counts
    _counts[sig] = _counts.get(sig, 0) + 1
    if not first:
        return
    name = hashlib.sha1(sig.encode()).hexdigest()[:12]
    FINDINGS.mkdir(parents=True, exist_ok=True)
    if not (FINDINGS / f"{name}.bin").exists():
        (FINDINGS / f"{name}.bin").write_bytes(data)
        (FINDINGS / f"{name}.txt").write_text(
            sig + "\n\n" + "".join(traceback.format_exception(exc))
        )
    _flush(_RUN_ID)


def test_one_input(data: bytes) -> None:
    global _tried
    _tried += 1
    if _tried % _FLUSH_EVERY == 0:
        _flush(_RUN_ID)
    if RAISE:
        _run(data)
        return
    try:
        _run(data)
    except (Exception, RecursionError, MemoryError) as exc:
        _record(data, exc)


def check(paths: list[Path]) -> int:
    """Run the property on files and say what happens to each (for triage)."""
    failed = 0
    for path in paths:
        try:
            results = _run(path.read_bytes())
            print(f"ok        {path}: {len(results)} outputs")
        except Exception as exc:
            failed += 1
            print(f"FINDING   {path}: {signature(exc)}")
    return 1 if failed else 0


def _limit_memory(megabytes: int) -> None:
    """A huge allocation then raises MemoryError (a finding) instead of taking the machine."""
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        return check([Path(p) for p in sys.argv[2:]])
    if atheris is None:
        sys.exit("fuzzing needs atheris: .venv/bin/pip install -e '.[fuzz]'")
    _limit_memory(int(os.environ.get("FUZZ_MEMORY_MB", "3072")))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
