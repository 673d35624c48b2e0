"""Checking an anonymizer script or filter before it is saved in the index: the parsers'
line numbers and reasons, without the document's own text unless it is a name."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.index.configuration import FILTER, SCRIPT, InvalidDocument, check_document

SCRIPTS = Path(__file__).parents[1] / "data" / "ctp-scripts"
PHI = "SMITH^JOHN"  # stands for a value taken from a patient


def _refused(kind: str, text: str, dialect: str = "auto") -> InvalidDocument:
    with pytest.raises(InvalidDocument) as caught:
        check_document(kind, text, dialect)
    return caught.value


def test_the_sites_scripts_are_accepted_with_their_dialect() -> None:
    java = (SCRIPTS / "rsna-java-dicom-anonymizer.script").read_text(encoding="utf-8")
    python = (SCRIPTS / "rsna-python-default-anonymizer.script").read_text(encoding="utf-8")
    assert check_document(SCRIPT, java) == "ctp"
    assert check_document(SCRIPT, python) == "rsna"
    assert check_document(SCRIPT, java, "rsna") == "rsna"
    assert check_document(FILTER, '!Modality.equals("SR") * !ImageType.contains("SECONDARY")'
                          ) is None
    assert check_document(FILTER, "") is None  # a blank filter accepts every object


def test_a_function_that_does_not_exist_is_refused_at_its_line() -> None:
    text = ("<script>\n <p t=\"UIDROOT\">1.2.3</p>\n"
            " <e en=\"T\" t=\"00100010\" n=\"PatientName\">@nosuchfunction(this)</e>\n"
            "</script>\n")
    error = _refused(SCRIPT, text)
    assert error.line == 3
    assert str(error) == ("line 3: PatientName, character 1 of the script: unknown function "
                          "(text left out)")


def test_script_errors_give_the_line_and_reason() -> None:
    assert str(_refused(SCRIPT, "<script>\n<e en=\"T\" t=\"00100010\"")) == (
        "line 2: not well-formed XML (column 1)")
    undefined = _refused(SCRIPT, "set.[0010,0010]PatientName=@param(@NOPE)\n")
    assert (undefined.line, undefined.reason) == (
        1, "PatientName, character 1 of the script: parameter @NOPE is not defined")
    assert _refused(SCRIPT, "keep.group0008\nremove.everything\n").line == 2
    assert _refused(SCRIPT, "").reason == "the script is empty"
    assert _refused(SCRIPT, "set.[0010,0010]PatientName=@remove()\n", "java").line is None


def test_a_script_that_would_de_identify_nothing_is_refused() -> None:
    # CTP keeps every element no enabled script names.
    error = _refused(SCRIPT, '<script>\n<p t="SITEID">1</p>\n'
                             '<e en="F" t="00100010" n="PatientName">@remove()</e>\n</script>')
    assert error.line is None and "nothing would be de-identified" in error.reason
    assert check_document(SCRIPT, "remove.unspecifiedelements\n") == "ctp"


def test_filter_errors_give_the_line_and_column() -> None:
    error = _refused(FILTER, 'Modality.equals("CT")\n+ (Modality.equals("MR")\n')
    assert error.line == 2
    assert error.reason.startswith("expected ')' to close the '(' at line 2, column 3")
    assert _refused(FILTER, 'Modality.matches("[")').reason.startswith(
        "invalid regular expression for matches")
    assert "column 10" in _refused(FILTER, 'Modality.equal("CT")').reason


@pytest.mark.parametrize(("kind", "text"), [
    (FILTER, f"PatientName.equals({PHI} JR)"),
    (FILTER, f'PatientName.equals("{PHI}") {PHI}'),
    (FILTER, f'{PHI}.equals("x")'),
    (SCRIPT, f"set.[0010,0010]PatientName=@remove()\n{PHI}=1\n"),
    (SCRIPT, f'<script>\n<e en="T" t="00100010" n="{PHI}">@keep()</e>\n'
             f'<e en="T" t="0010001X" n="{PHI}">@keep()</e>\n</script>'),
    (SCRIPT, "set.[0010,0010]PatientName=smith@hospital.org\n"),
    (SCRIPT, f"keep.group{PHI}\n"),
])
def test_errors_never_quote_the_documents_values(kind: str, text: str) -> None:
    error = _refused(kind, text)
    assert error.line is not None
    assert "SMITH" not in str(error) and "hospital" not in str(error)
    assert "(text left out)" in str(error)


def test_names_stay_in_the_errors() -> None:
    unknown = _refused(FILTER, 'PatientName.equal("x")')
    assert "known methods: equals" in unknown.reason
    assert "'(' after equals" in _refused(FILTER, "PatientName.equals").reason


def test_nul_characters_and_huge_documents_are_refused() -> None:
    assert _refused(FILTER, 'Modality.equals("CT")\n\x00').line == 2
    assert _refused(FILTER, " " * 1_000_001).line is None
    with pytest.raises(ValueError, match="unknown document kind"):
        check_document("lookup", "")
