using System.Globalization;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

namespace Ullme.MLNet.Training.Sweeps;

/// <summary>
/// One swept setting of <see cref="FineTuneOptions"/>: a name (a leaderboard column), the values to try, and how a
/// value changes the options. Built-in dimensions cover the usual knobs; <see cref="Custom{T}"/> sweeps anything else.
/// </summary>
public sealed class SweepDimension
{
    private readonly Func<FineTuneOptions, object, FineTuneOptions> _apply;
    private readonly Func<object, string> _format;

    private SweepDimension(string name, IReadOnlyList<object> values, Func<FineTuneOptions, object, FineTuneOptions> apply, Func<object, string> format)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new UllmeException("A sweep dimension needs a name.");
        if (values.Count == 0) throw new UllmeException($"Sweep dimension '{name}' has no values.");
        Name = name;
        Values = values;
        _apply = apply;
        _format = format;
    }

    public string Name { get; }
    public IReadOnlyList<object> Values { get; }

    internal FineTuneOptions Apply(FineTuneOptions options, object value) => _apply(options, value);
    internal string Format(object value) => _format(value);

    /// <summary>Any setting: <paramref name="apply"/> returns the options with the value set.</summary>
    public static SweepDimension Custom<T>(string name, IEnumerable<T> values, Func<FineTuneOptions, T, FineTuneOptions> apply, Func<T, string>? format = null) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(apply);
        return new SweepDimension(name, values.Cast<object>().ToList(), (o, v) => apply(o, (T)v),
            v => format is not null ? format((T)v) : Convert.ToString(v, CultureInfo.InvariantCulture) ?? "");
    }

    /// <summary>Objective presets (λ weights of the preset; clears free <see cref="FineTuneOptions.Weights"/>).</summary>
    public static SweepDimension Strategy(params TrainingStrategy[] values) =>
        Custom("strategy", values, (o, v) => o with { Strategy = v, Weights = null });

    /// <summary>Free λ weights (contrastive, LM, preference, consistency).</summary>
    public static SweepDimension Weights(params LossWeights[] values) =>
        Custom("weights", values, (o, v) => o with { Weights = v },
            v => string.Create(CultureInfo.InvariantCulture, $"{v.Contrastive}/{v.LanguageModel}/{v.Preference}/{v.Consistency}"));

    /// <summary>InfoNCE temperature τ.</summary>
    public static SweepDimension Temperature(params double[] values) =>
        Custom("temperature", values, (o, v) => o with { Temperature = v });

    /// <summary>Peak learning rate.</summary>
    public static SweepDimension LearningRate(params double[] values) =>
        Custom("lr", values, (o, v) => o with { Optimizer = o.Optimizer with { LearningRate = v } });

    /// <summary>LoRA rank r; α follows so that α/r stays that of the base options (the update scale is unchanged).</summary>
    public static SweepDimension LoraRank(params int[] values) =>
        Custom("lora_rank", values, (o, v) =>
        {
            var lora = o.Lora ?? throw new UllmeException("Sweep dimension lora_rank needs LoRA in the base options (FineTuneOptions.Lora is null: full fine-tuning).");
            return o with { Lora = lora with { Rank = v, Alpha = lora.Scale * v } };
        });

    /// <summary>Pooling used for training and for the trial's evaluation.</summary>
    public static SweepDimension Pooling(params PoolingMode[] values) =>
        Custom("pooling", values, (o, v) => o with { Pooling = v });

    /// <summary>Attention mode of the embeddings, for training and evaluation.</summary>
    public static SweepDimension Attention(params AttentionMode[] values) =>
        Custom("attention", values, (o, v) => o with { EmbeddingAttention = v });
}

/// <summary>A point of a <see cref="SweepSpace"/>: one value per dimension.</summary>
public sealed class SweepPoint
{
    private readonly IReadOnlyList<SweepDimension> _dimensions;
    private readonly int[] _indices;

    internal SweepPoint(IReadOnlyList<SweepDimension> dimensions, int[] indices, int flatIndex)
    {
        _dimensions = dimensions;
        _indices = indices;
        FlatIndex = flatIndex;
    }

    /// <summary>The point's position in <see cref="SweepSpace.Grid"/>.</summary>
    internal int FlatIndex { get; }

    /// <summary>The value index chosen in each dimension.</summary>
    internal IReadOnlyList<int> Indices => _indices;

    /// <summary>The chosen value of each dimension, by dimension name, formatted for tables.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Settings =>
        _dimensions.Select((d, i) => new KeyValuePair<string, string>(d.Name, d.Format(d.Values[_indices[i]]))).ToList();

    /// <summary><paramref name="options"/> with this point's values applied (in dimension order).</summary>
    public FineTuneOptions Apply(FineTuneOptions options)
    {
        for (int i = 0; i < _dimensions.Count; i++) options = _dimensions[i].Apply(options, _dimensions[i].Values[_indices[i]]);
        return options;
    }

    public override string ToString() => string.Join(", ", Settings.Select(s => $"{s.Key}={s.Value}"));
}

/// <summary>
/// The settings a sweep explores: the Cartesian product of its dimensions. <see cref="Grid"/> lists every point;
/// <see cref="Random"/> draws distinct points with a seed (the same seed gives the same points).
/// </summary>
public sealed class SweepSpace
{
    public SweepSpace(params SweepDimension[] dimensions)
    {
        ArgumentNullException.ThrowIfNull(dimensions);
        if (dimensions.Length == 0) throw new UllmeException("A sweep space needs at least one dimension.");
        var duplicate = dimensions.GroupBy(d => d.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new UllmeException($"Sweep dimension '{duplicate.Key}' appears twice.");
        Dimensions = dimensions;
    }

    public IReadOnlyList<SweepDimension> Dimensions { get; }

    /// <summary>Number of points in the full grid.</summary>
    public long GridSize => Dimensions.Aggregate(1L, (n, d) => checked(n * d.Values.Count));

    /// <summary>Every point; the last dimension varies fastest.</summary>
    public IReadOnlyList<SweepPoint> Grid() => Enumerable.Range(0, checked((int)GridSize)).Select(PointAt).ToList();

    /// <summary><paramref name="count"/> distinct points drawn uniformly from the grid (all of them, shuffled, if
    /// <paramref name="count"/> ≥ the grid size).</summary>
    public IReadOnlyList<SweepPoint> Random(int count, int seed)
    {
        if (count < 1) throw new UllmeException($"A random sweep needs at least one trial, got {count}.");
        int size = checked((int)GridSize);
        var order = Enumerable.Range(0, size).ToArray();
        new Random(seed).Shuffle(order);
        return order.Take(Math.Min(count, size)).Select(PointAt).ToList();
    }

    /// <summary>The grid point at <paramref name="flat"/> (see <see cref="Grid"/>).</summary>
    internal SweepPoint PointAt(int flat)
    {
        int index = flat;
        var indices = new int[Dimensions.Count];
        for (int i = Dimensions.Count - 1; i >= 0; i--)
        {
            indices[i] = flat % Dimensions[i].Values.Count;
            flat /= Dimensions[i].Values.Count;
        }
        return new SweepPoint(Dimensions, indices, index);
    }
}
