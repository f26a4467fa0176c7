"""Canary analysis: `peakserve analyze` compares a canary Deployment with the stable one.

The operator runs it in a Job at the end of each canary step; the Job writes one JSON verdict to its
termination message. The modules keep the pure parts apart from the I/O, so the verdict is tested
without a cluster, a Prometheus or a Triton:

    stats       the probe statistics (PSI, KS, top-k agreement, AUC, cosine), numpy only
    promql      the PromQL queries and the parsing of Prometheus' answers, pure
    prometheus  the one HTTP call to Prometheus (urllib)
    probe_data  the probe.npz format: written by `peakserve build`, read here
    probe       the probe comparison: the same batch through one stable and one canary Triton
    verdict     figures and thresholds -> the failing checks -> the result JSON
    cli         the command: arguments, the order of the steps, exit codes

Nothing here is imported by `peakserve run`: the command needs the ``client`` extra (tritonclient,
numpy), which the model-builder image has.
"""
