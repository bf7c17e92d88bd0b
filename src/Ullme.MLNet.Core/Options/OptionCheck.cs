namespace Ullme.MLNet;

/// <summary>The checks every options record uses, so the same rule gives the same words everywhere.</summary>
internal static class OptionCheck
{
    /// <summary>The error for an invalid value of <paramref name="option"/> (engine name, e.g. "EmbeddingOptions.MaxLength").</summary>
    public static UllmeException Error(string option, string problem) => new(option, problem, option);

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
