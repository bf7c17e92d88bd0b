using System.Text.RegularExpressions;

namespace Ullme.MLNet.Hub;

/// <summary>A Hugging Face model id, <c>org/name</c>, with an optional <c>@revision</c> (branch, tag or commit).</summary>
internal sealed partial record HubModelId(string Organization, string Name, string? Revision)
{
    /// <summary>The revision used when none is given.</summary>
    public const string DefaultRevision = "main";

    /// <summary><c>org/name</c>.</summary>
    public string RepoId => $"{Organization}/{Name}";

    /// <summary>The revision asked for, or <see cref="DefaultRevision"/>.</summary>
    public string EffectiveRevision => Revision ?? DefaultRevision;

    /// <summary><c>org/name</c> or <c>org/name@revision</c>, as the user wrote it.</summary>
    public override string ToString() => Revision is null ? RepoId : $"{RepoId}@{Revision}";

    /// <summary>
    /// Parses <c>org/name[@revision]</c> with huggingface_hub's rules for repository ids (letters, digits, '-', '_',
    /// '.'; no leading or trailing '-' or '.', no "--" or "..", at most 96 characters a part). A revision may hold
    /// '/' (<c>refs/pr/1</c>) but no "..", whitespace or '\'. False for anything else (a path, a single name).
    /// </summary>
    public static bool TryParse(string? text, out HubModelId id)
    {
        id = null!;
        if (string.IsNullOrEmpty(text)) return false;
        string repo = text;
        string? revision = null;
        int at = text.IndexOf('@');
        if (at >= 0)
        {
            repo = text[..at];
            revision = text[(at + 1)..];
            if (!RevisionPattern().IsMatch(revision) || revision.Contains("..", StringComparison.Ordinal)
                || revision.StartsWith('/') || revision.EndsWith('/') || revision.Contains("//", StringComparison.Ordinal))
                return false;
        }
        int slash = repo.IndexOf('/');
        if (slash < 0 || slash != repo.LastIndexOf('/')) return false;
        string org = repo[..slash], name = repo[(slash + 1)..];
        if (!IsPart(org) || !IsPart(name)) return false;
        id = new HubModelId(org, name, revision);
        return true;
    }

    private static bool IsPart(string part) =>
        part.Length is > 0 and <= 96 && PartPattern().IsMatch(part)
        && part[0] is not ('-' or '.') && part[^1] is not ('-' or '.')
        && !part.Contains("--", StringComparison.Ordinal) && !part.Contains("..", StringComparison.Ordinal);

    [GeneratedRegex("^[A-Za-z0-9_.-]+$")]
    private static partial Regex PartPattern();

    [GeneratedRegex("^[A-Za-z0-9_.\\-/+]{1,200}$")]
    private static partial Regex RevisionPattern();
}
