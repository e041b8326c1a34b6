namespace Raft.Spec
