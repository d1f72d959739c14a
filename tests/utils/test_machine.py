"""cpu_model: the CPU model name every report names."""

from sam_mix_monai.utils.machine import cpu_model


def test_cpu_model_reads_the_model_name_line():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t: fpu\n"
    assert cpu_model(text) == "AMD EPYC 9B14"


def test_cpu_model_without_a_model_name_falls_back_to_the_platform():
    assert cpu_model("processor\t: 0\n")  # a non-empty name, never a crash
    assert cpu_model("processor\t: 0\n") != "AMD EPYC 9B14"
