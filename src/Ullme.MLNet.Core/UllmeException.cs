namespace Ullme.MLNet;

/// <summary>
/// A user-facing error: bad model folder, malformed file, invalid option or input. Its message names the file,
/// column, option or value at fault and is meant to be shown as one line, without a stack trace.
/// </summary>
public class UllmeException : Exception
{
    public UllmeException(string message) : base(message) { }
    public UllmeException(string message, Exception inner) : base(message, inner) { }

    /// <summary>An invalid option value (see <see cref="Option"/>): the message is "<paramref name="shownAs"/>
    /// <paramref name="problem"/>.".</summary>
    internal UllmeException(string option, string problem, string shownAs) : base($"{shownAs} {problem}.")
    {
        Option = option;
        Problem = problem;
    }

    /// <summary>
    /// When the error is an invalid option value: the option as the engine names it, record and property
    /// (<c>"RerankOptions.MixWeight"</c>); null for other errors. The engine's option records validate themselves
    /// and every surface delegates to them, so the same invalid value gives the same <see cref="Problem"/> everywhere;
    /// the message names the option as the caller's surface spells it: the record's property for a C# caller, the
    /// ML.NET options' property for an ML.NET caller, the flag for a CLI user
    /// (<c>--mix-weight must be between 0 and 1 (got 2).</c>).
    /// </summary>
    public string? Option { get; }

    /// <summary>With <see cref="Option"/>: what is wrong, without the name (<c>"must be between 0 and 1 (got 2)"</c>).</summary>
    public string? Problem { get; }

    /// <summary>The same option error under the name <paramref name="shownAs"/> (e.g. a CLI flag); other errors unchanged.</summary>
    internal UllmeException As(string shownAs) => Option is null ? this : new(Option, Problem!, shownAs);

    /// <summary>The same option error with the record's name replaced by <paramref name="record"/> (the surface's
    /// options type), the property kept unless <paramref name="renames"/> maps it:
    /// <c>"EmbeddingOptions.BatchSize"</c> → <c>"UllmeEmbeddingOptions.BatchSize"</c>.</summary>
    internal UllmeException Under(string record, IReadOnlyDictionary<string, string>? renames = null)
    {
        if (Option is null) return this;
        if (renames is not null && renames.TryGetValue(Option, out string? name)) return As(record + "." + name);
        int dot = Option.IndexOf('.');
        return As(record + "." + (dot < 0 ? Option : Option[(dot + 1)..]));
    }
}
