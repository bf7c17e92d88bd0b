using System.CommandLine;
using Ullme.MLNet;

namespace Ullme.Cli;

/// <summary>
/// The flag a user types for each engine option. The engine's records validate themselves and name the option as
/// C# spells it (<c>RerankOptions.MixWeight</c>); the CLI shows the same message under the flag the user typed
/// (<c>--mix-weight must be between 0 and 1 (got 2).</c>). A flag is used only when the running command has it.
/// </summary>
internal static class CliOptionNames
{
    public static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["EmbeddingOptions.MaxLength"] = "--max-length",
        ["EmbeddingOptions.BatchSize"] = "--batch-size",
        ["EmbeddingOptions.Pooling"] = "--pooling",
        ["EmbeddingOptions.Attention"] = "--attention",
        ["EmbeddingOptions.Instruction"] = "--instruction",
        ["EmbeddingOptions.Dimensions"] = "--dimensions",
        ["RelevanceOptions.GenerationBatchSize"] = "--batch-size",
        ["RelevanceOptions.GenerationScore"] = "--generation-score",
        ["RelevanceOptions.GenerationPrompt"] = "--prompt",
        ["RelevanceOptions.MaxGenerationLength"] = "--max-generation-length",
        ["RerankOptions.By"] = "--by",
        ["RerankOptions.MixWeight"] = "--mix-weight",
        ["ModelLoadOptions.DType"] = "--dtype",
        ["ModelLoadOptions.Device"] = "--device",
        ["ModelLoadOptions.Threads"] = "--threads",
        ["ModelLoadOptions.Backend"] = "--backend",
        ["OnnxExportOptions.Quantize"] = "--quantize",
        ["FineTuneOptions.BatchSize"] = "--batch-size",
        ["FineTuneOptions.Epochs"] = "--epochs",
        ["FineTuneOptions.MaxSteps"] = "--steps",
        ["FineTuneOptions.AccumulationSteps"] = "--grad-accum",
        ["FineTuneOptions.GradCacheChunkSize"] = "--grad-cache-chunk",
        ["FineTuneOptions.GenerationChunkSize"] = "--generation-chunk",
        ["FineTuneOptions.Temperature"] = "--temperature",
        ["FineTuneOptions.MatryoshkaDimensions"] = "--matryoshka-dims",
        ["FineTuneOptions.MatryoshkaWeights"] = "--matryoshka-weights",
        ["FineTuneOptions.Beta"] = "--beta",
        ["FineTuneOptions.GenerationTemperature"] = "--generation-temperature",
        ["FineTuneOptions.MaxLength"] = "--max-length",
        ["FineTuneOptions.MaxGenerationLength"] = "--max-generation-length",
        ["FineTuneOptions.CheckpointEvery"] = "--checkpoint-every",
        ["FineTuneOptions.KeepCheckpoints"] = "--keep-checkpoints",
        ["FineTuneOptions.MaxGradientNorm"] = "--max-grad-norm",
        ["FineTuneOptions.MaskRatio"] = "--mask-ratio",
        ["FineTuneOptions.ShareNegativesAcrossAccumulation"] = "--shared-negatives",
        ["FineTuneOptions.MaskToken"] = "--mask-token",
        ["FineTuneOptions.AttentionDropout"] = "--attention-dropout",
        ["FineTuneOptions.Weights.Contrastive"] = "--lambda-cl",
        ["FineTuneOptions.Weights.LanguageModel"] = "--lambda-lm",
        ["FineTuneOptions.Weights.Preference"] = "--lambda-pref",
        ["FineTuneOptions.Weights.Consistency"] = "--lambda-kl",
    };

    /// <summary>The error as the CLI user should read it: under the flag of <paramref name="command"/> that set the
    /// option, or unchanged when the command has no such flag.</summary>
    public static Exception ForCommand(Exception e, Command? command)
    {
        if (e is not UllmeException { Option: { } engineName } o || command is null) return e;
        if (!Flags.TryGetValue(engineName, out string? flag)) return e;
        foreach (var option in command.Options)
            if (option.Name == flag || option.Aliases.Contains(flag)) return o.As(flag);
        return e;
    }
}
