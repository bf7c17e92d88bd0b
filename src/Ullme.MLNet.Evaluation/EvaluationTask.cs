using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation;

/// <summary>
/// One MTEB-style task: a name, a type, its splits and how to score an embedder on them. Data is loaded when the
/// task is created (so a bad file fails before any model is loaded); <see cref="Evaluate"/> returns the scores of
/// every split in MTEB's layout.
/// </summary>
public abstract class EvaluationTask
{
    protected EvaluationTask(string name)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("task name is empty", nameof(name));
        Name = name;
    }

    /// <summary>MTEB's task name (e.g. "STSBenchmark"); also the result file name.</summary>
    public string Name { get; }

    public abstract TaskType Type { get; }

    /// <summary>The metric reported as <c>main_score</c>.</summary>
    public abstract string MainScore { get; }

    /// <summary>Split names this task will evaluate (e.g. "validation", "test").</summary>
    public abstract IReadOnlyList<string> Splits { get; }

    /// <summary>Revision of the MTEB dataset the task mirrors, or "no_revision_available".</summary>
    public string DatasetRevision { get; set; } = "no_revision_available";

    /// <summary>MTEB language codes of the task.</summary>
    public IReadOnlyList<string> Languages { get; set; } = ["eng-Latn"];

    /// <summary>The task's instruction for instruction-following models; null = MTEB's default for the type.</summary>
    public string? DefaultInstruction { get; set; }

    /// <summary>Where the data came from (files), for logs and docs.</summary>
    public string? Source { get; set; }

    /// <summary>Scores every split: split name -> metrics (with <c>main_score</c>, <c>hf_subset</c> "default").</summary>
    public abstract IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context);

    /// <summary>A fresh score set for a split of this task.</summary>
    protected SplitScores NewScores() => new() { MainScoreName = MainScore, Languages = Languages };

    public override string ToString() => $"{Name} ({Type})";
}
