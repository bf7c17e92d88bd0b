namespace Ullme.MLNet.Evaluation;

/// <summary>Progress of one task: <paramref name="Stage"/> names the step ("embedding", "classifier 3/10", ...);
/// <paramref name="Done"/>/<paramref name="Total"/> count texts while embedding and steps otherwise.
/// <paramref name="TaskIndex"/> is the task's position in the run (0-based) of <paramref name="TaskCount"/>.</summary>
public readonly record struct EvaluationProgress(string Task, int TaskIndex, int TaskCount, string Stage, long Done, long Total);
