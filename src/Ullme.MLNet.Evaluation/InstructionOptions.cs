namespace Ullme.MLNet.Evaluation;

/// <summary>Whether and how task instructions are given to the embedder.</summary>
public enum InstructionMode
{
    /// <summary>Decoder models (instruction-tuned LLM embedders such as E5-mistral, GritLM, ULLME) get instructions;
    /// encoders such as all-MiniLM-L6-v2 do not.</summary>
    Auto,

    /// <summary>Always give instructions.</summary>
    On,

    /// <summary>Never give instructions.</summary>
    Off,
}

/// <summary>
/// Task instructions for instruction-following embedders. The instruction of a task is, in order: an entry of
/// <see cref="Overrides"/> (by task name), the task's own default (<see cref="EvaluationTask.DefaultInstruction"/>,
/// the table in docs/evaluation.md, taken from E5-mistral / MTEB task metadata), or MTEB's per-type default prompt.
/// It is formatted with <see cref="Template"/> (E5-mistral's "Instruct: {0}\nQuery: " by default) and passed to the
/// engine as <c>EmbeddingOptions.Instruction</c>, so its tokens are attended to but excluded from pooling.
/// Asymmetric tasks apply it to queries only; symmetric tasks to every text.
/// </summary>
public sealed record InstructionOptions
{
    /// <summary>E5-mistral's instruction format.</summary>
    public const string DefaultTemplate = "Instruct: {0}\nQuery: ";

    public InstructionMode Mode { get; init; } = InstructionMode.Auto;

    /// <summary>Format string with one placeholder, {0}, for the task instruction.</summary>
    public string Template { get; init; } = DefaultTemplate;

    /// <summary>Instruction text by task name (case-insensitive), replacing the default.</summary>
    public IReadOnlyDictionary<string, string> Overrides { get; init; } = new Dictionary<string, string>();

    /// <summary>MTEB's default prompt per task type (<c>abstask_prompt</c>).</summary>
    public static string TypeDefault(TaskType type) => type switch
    {
        TaskType.STS => "Retrieve semantically similar text.",
        TaskType.Retrieval => "Retrieve text based on user query.",
        TaskType.Reranking => "Retrieve text based on user query.",
        TaskType.Classification => "Classify user passages.",
        TaskType.Clustering => "Identify categories in user passages.",
        TaskType.PairClassification => "Retrieve text that are semantically similar to the given text.",
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>True when instructions are used for a model that is (or is not) a decoder.</summary>
    public bool IsEnabled(bool decoderModel) => Mode switch
    {
        InstructionMode.On => true,
        InstructionMode.Off => false,
        _ => decoderModel,
    };

    /// <summary>The instruction text of a task (unformatted).</summary>
    public string InstructionFor(EvaluationTask task)
    {
        foreach (var (name, text) in Overrides)
            if (string.Equals(name, task.Name, StringComparison.OrdinalIgnoreCase)) return text;
        return task.DefaultInstruction ?? TypeDefault(task.Type);
    }

    /// <summary>The formatted instruction prefix for a text of <paramref name="role"/> in <paramref name="task"/>,
    /// or null (documents of asymmetric tasks never get one).</summary>
    public string? PrefixFor(EvaluationTask task, TextRole role)
    {
        if (role == TextRole.Document) return null;
        if (!Template.Contains("{0}", StringComparison.Ordinal))
            throw new UllmeException($"instruction template '{Template}' has no {{0}} placeholder for the instruction");
        return string.Format(System.Globalization.CultureInfo.InvariantCulture, Template, InstructionFor(task));
    }
}
