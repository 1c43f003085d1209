"""
The roles a node plays in its cluster, one class each, implementing
L{srp.interfaces.IClusterRole}: L{ProbingRole <seeking.ProbingRole>},
L{WaitingRole <seeking.WaitingRole>} and L{BindingRole <seeking.BindingRole>}
(no active to follow), L{PassiveRole <passive.PassiveRole>},
L{ActiveRole <active.ActiveRole>}, L{HandingOverRole
<handingover.HandingOverRole>}, and the idle, stopped and crashed ones
(L{base}).  The role machine in L{srp.server.membership} holds the current
one as its state data.
"""
