namespace Ullme.MLNet;

/// <summary>
/// An option holds an invalid value. <see cref="Option"/> names it as the engine spells it
/// (<c>"EmbeddingOptions.MaxLength"</c>); the message names it as the caller typed it: the engine record's property for
/// a C# caller, the ML.NET options' property for an ML.NET caller, the flag for a CLI user
/// (<c>"--max-length must be at least 2 (got 0)."</c>). Every surface validates through the engine record, so the
/// same invalid value gives the same message, modulo the name.
/// </summary>
public sealed class UllmeOptionException : UllmeException
{
    internal UllmeOptionException(string option, string problem, string? shownAs = null)
        : base($"{shownAs ?? option} {problem}.")
    {
        Option = option;
        Problem = problem;
        ShownAs = shownAs ?? option;
    }

    /// <summary>The engine's name of the option: record and property, e.g. <c>"RerankOptions.MixWeight"</c>.</summary>
    public string Option { get; }

    /// <summary>What is wrong, without the name, e.g. <c>"must be between 0 and 1 (got 2)"</c>.</summary>
    public string Problem { get; }

    /// <summary>The name the message uses (the option as the caller's surface spells it).</summary>
    public string ShownAs { get; }

    /// <summary>The same error under the name <paramref name="shownAs"/> (e.g. a CLI flag).</summary>
    internal UllmeOptionException As(string shownAs) => new(Option, Problem, shownAs);

    /// <summary>The same error with the record's name replaced by <paramref name="record"/> (the surface's options type);
    /// the property name is kept: <c>"EmbeddingOptions.BatchSize"</c> → <c>"UllmeEmbeddingOptions.BatchSize"</c>.</summary>
    internal UllmeOptionException Under(string record, IReadOnlyDictionary<string, string>? renames = null)
    {
        if (renames is not null && renames.TryGetValue(Option, out string? name)) return As(record + "." + name);
        int dot = Option.IndexOf('.');
        return As(record + "." + (dot < 0 ? Option : Option[(dot + 1)..]));
    }
}

/// <summary>The checks every options record uses, so the same rule gives the same words everywhere.</summary>
internal static class OptionCheck
{
    public static UllmeOptionException Error(string option, string problem) => new(option, problem);

    public static void AtLeast(long value, long min, string option, string unit = "")
    {
        if (value < min) throw Error(option, $"must be at least {min}{unit} (got {value})");
    }

    public static void AtLeast(int? value, int min, string option, string unit = "")
    {
        if (value is { } v) AtLeast((long)v, min, option, unit);
    }

    public static void Range(long value, long min, long max, string option, string? why = null)
    {
        if (value < min || value > max)
            throw Error(option, $"must be between {min} and {max}{(why is null ? "" : " (" + why + ")")} (got {value})");
    }

    public static void Between(double value, double min, double max, string option)
    {
        if (!(value >= min && value <= max))
            throw Error(option, $"must be between {Shown(min)} and {Shown(max)} (got {Shown(value)})");
    }

    public static void Positive(double value, string option)
    {
        if (!(value > 0) || !double.IsFinite(value)) throw Error(option, $"must be a positive number (got {Shown(value)})");
    }

    public static void NonNegative(double value, string option)
    {
        if (!(value >= 0) || !double.IsFinite(value)) throw Error(option, $"must be a non-negative number (got {Shown(value)})");
    }

    public static void Defined<T>(T value, string option) where T : struct, Enum
    {
        if (!Enum.IsDefined(value))
            throw Error(option, $"has no such value: {Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture)} (use {string.Join(", ", Enum.GetNames<T>())})");
    }

    public static void Defined<T>(T? value, string option) where T : struct, Enum
    {
        if (value is { } v) Defined(v, option);
    }

    public static string Shown(double v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}
