using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Lora;

/// <summary>
/// Settings of a LoRA adapter (Hu et al. 2021). Defaults are ULLME's: rank 16, α 32, dropout 0.1 on every linear
/// layer except the language-model head.
/// </summary>
public sealed record LoraOptions
{
    /// <summary>r, the rank of the update B·A. Default 16.</summary>
    public int Rank { get; init; } = 16;

    /// <summary>α; the update is scaled by α / r. Default 32.</summary>
    public double Alpha { get; init; } = 32;

    /// <summary>Dropout on the adapter's input (training mode only). Default 0.1.</summary>
    public double Dropout { get; init; } = 0.1;

    /// <summary>
    /// Which linear layers get an adapter, by name: a layer matches if its full name equals an entry or ends with
    /// "." + entry (PEFT's rule), e.g. <c>["q_proj", "v_proj"]</c>. Null (default) = every linear layer.
    /// </summary>
    public IReadOnlyList<string>? TargetModules { get; init; }

    /// <summary>Names (same matching rule) never adapted, even if targeted. Default <c>["lm_head"]</c>.</summary>
    public IReadOnlyList<string> ExcludedModules { get; init; } = ["lm_head"];

    /// <summary>Precision of the adapter weights. Default float32, also when the base model runs in bfloat16
    /// (float32 master weights; the adapter branch computes in float32 and its output is cast to the base dtype).</summary>
    public ScalarType AdapterDType { get; init; } = ScalarType.Float32;

    /// <summary>The scale α / r applied to B·A·x.</summary>
    public double Scale => Alpha / Rank;

    internal void Validate()
    {
        if (Rank <= 0) throw new UllmeException($"LoRA option Rank must be positive, got {Rank}.");
        if (Alpha <= 0 || !double.IsFinite(Alpha)) throw new UllmeException($"LoRA option Alpha must be positive, got {Alpha}.");
        if (Dropout < 0 || Dropout >= 1 || double.IsNaN(Dropout)) throw new UllmeException($"LoRA option Dropout must be in [0, 1), got {Dropout}.");
        if (AdapterDType is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new UllmeException($"LoRA option AdapterDType must be a floating-point type, got {AdapterDType}.");
        if (TargetModules is { Count: 0 }) throw new UllmeException("LoRA option TargetModules is empty: give at least one module name, or null for all linear layers.");
    }

    /// <summary>PEFT's name rule: exact match or a dotted suffix.</summary>
    internal static bool NameMatches(string fullName, string pattern) =>
        fullName == pattern || fullName.EndsWith("." + pattern, StringComparison.Ordinal);
}
