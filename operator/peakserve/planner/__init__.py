"""`peakserve plan`: capacity planning for promotion peaks.

hpa        the HPA controller's arithmetic (HpaState.step every sync period)
trace      traffic traces (CSV) and the synthetic Singles' Day generator
queueing   one replica's latency and queue time under load (M/M/c-ish, fluid backlog)
policies   static, Triton's example HPA, schedule + metric HPA, oracle
simulate   the time-stepped simulation and its accounting
recommend  the schedule's floor, lead time and metric target
plot       the PNG
cli        add_parser(sub) / main(args)
"""
