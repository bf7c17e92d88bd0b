using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Inference;

/// <summary>
/// The generation side of GRL in one place, shared by training (<c>UllmeFineTuner</c>) and scoring
/// (<see cref="RelevanceScorer"/>, the <c>UllmeScore</c> transform, reranking), so a passage is scored with exactly
/// the ids it was trained with: <c>[BOS] + tokens(prompt(query)) + tokens(passage)</c>, prompt and passage tokenized
/// separately, the passage's tokens scored given everything before them.
/// </summary>
public static class GenerationPrompt
{
    /// <summary>ULLME's prompt: the passage is generated after it.</summary>
    public const string DefaultTemplate = "{instruction}\nQuery: {query}\nPassage: ";

    /// <summary>
    /// The prompt for a query: <c>{query}</c> replaced by the query, <c>{instruction}</c> by the instruction; with no
    /// instruction, <c>"{instruction}\n"</c> is dropped.
    /// </summary>
    public static string Build(string template, string query, string? instruction)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(query);
        if (string.IsNullOrEmpty(instruction))
            template = template.Replace("{instruction}\n", "", StringComparison.Ordinal).Replace("{instruction}", "", StringComparison.Ordinal);
        else
            template = template.Replace("{instruction}", instruction, StringComparison.Ordinal);
        return template.Replace("{query}", query, StringComparison.Ordinal);
    }

    /// <summary>Checks a template; <paramref name="option"/> names the setting in the error.</summary>
    public static void Validate(string? template, string option)
    {
        if (string.IsNullOrEmpty(template) || !template.Contains("{query}", StringComparison.Ordinal))
            throw new UllmeException($"{option} must contain {{query}} (got \"{template}\").");
    }

    /// <summary>The prompt's ids: the tokenizer's prefix special tokens (BOS) then the prompt's tokens.</summary>
    public static int[] EncodePrompt(ITextTokenizer tokenizer, string prompt) =>
        [.. tokenizer.PrefixTokenIds, .. tokenizer.Encode(prompt, addSpecialTokens: false)];

    /// <summary>
    /// prompt ids + candidate ids, cut to <paramref name="maxLength"/> tokens (null = no cap): the candidate loses its
    /// end first; if the prompt alone is too long it loses its beginning (after the special prefix), keeping one
    /// candidate token. Tokens from <see cref="TokenScoreRequest.ScoreFrom"/> on are the candidate's.
    /// </summary>
    public static TokenScoreRequest Join(IReadOnlyList<int> prompt, IReadOnlyList<int> candidate, int prefixSpecialTokens, int? maxLength)
    {
        if (maxLength is null || prompt.Count + candidate.Count <= maxLength.Value)
            return new TokenScoreRequest([.. prompt, .. candidate], Math.Max(1, prompt.Count));
        if (maxLength.Value < 2) throw new UllmeException($"The maximum generation length must be at least 2 tokens, got {maxLength.Value}.");
        int keepCandidate = Math.Max(1, maxLength.Value - prompt.Count);
        int keepPrompt = maxLength.Value - keepCandidate;
        int special = Math.Min(prefixSpecialTokens, keepPrompt);
        int[] p = [.. prompt.Take(special), .. prompt.Skip(prompt.Count - (keepPrompt - special))];
        return new TokenScoreRequest([.. p, .. candidate.Take(keepCandidate)], Math.Max(1, p.Length));
    }
}
