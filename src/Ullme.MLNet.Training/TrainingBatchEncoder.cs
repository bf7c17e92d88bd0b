using Ullme.MLNet.Inference;
using Ullme.MLNet.Tokenization;

namespace Ullme.MLNet.Training;

/// <summary>
/// Tokenizes and pads a batch of training examples, the way inference does (<see cref="TextEncoding"/>,
/// <see cref="GenerationPrompt"/>, <see cref="TokenBatch"/>, the model's pad id): the embedding groups (queries with
/// their instruction attended to but not pooled, positives, flattened hard negatives) and the causal generation
/// batch (<c>[BOS] + prompt(q) + candidate</c> for every candidate, the candidate scored).
/// </summary>
internal sealed class TrainingBatchEncoder
{
    private readonly UllmeModel _model;
    private readonly ITextTokenizer _tokenizer;
    private readonly FineTuneOptions _options;

    public TrainingBatchEncoder(UllmeModel model, FineTuneOptions options)
    {
        _model = model;
        _tokenizer = model.Tokenizer;
        _options = options;
    }

    /// <summary>Every hard negative of the batch, flattened in query order, with the query it belongs to.</summary>
    public static (List<string> Texts, List<int> Owner) Negatives(IReadOnlyList<TrainingExample> batch) => Flatten(batch, e => e.Negatives);

    /// <summary>Every extra positive of the batch (<see cref="TrainingExample.ExtraPositives"/>), flattened in query
    /// order, with the query it belongs to.</summary>
    public static (List<string> Texts, List<int> Owner) ExtraPositives(IReadOnlyList<TrainingExample> batch) => Flatten(batch, e => e.ExtraPositives);

    private static (List<string> Texts, List<int> Owner) Flatten(IReadOnlyList<TrainingExample> batch, Func<TrainingExample, IReadOnlyList<string>> texts)
    {
        var flat = new List<string>();
        var owner = new List<int>();
        for (int q = 0; q < batch.Count; q++)
            foreach (var t in texts(batch[q])) { owner.Add(q); flat.Add(t); }
        return (flat, owner);
    }

    /// <summary>The groups of <see cref="EncodedGroups"/> cut into length buckets (<see cref="LengthBuckets"/>).</summary>
    public LengthBuckets EmbeddingBuckets(IReadOnlyList<TrainingExample> batch) =>
        LengthBuckets.Create(EncodedGroups(batch), _model.PadTokenId, _model.Device);

    /// <summary>The texts to embed, encoded: [queries (with their instructions), positives], then the flattened negatives
    /// and the flattened extra positives when the batch has any.</summary>
    public List<IReadOnlyList<EncodedText>> EncodedGroups(IReadOnlyList<TrainingExample> batch)
    {
        var negatives = Negatives(batch).Texts;
        var extras = ExtraPositives(batch).Texts;
        var groups = new List<IReadOnlyList<EncodedText>>
        {
            Encode(batch.Select(e => e.Query).ToList(), batch.Select(e => e.Instruction).ToList()),
            Encode(batch.Select(e => e.Positive).ToList(), null),
        };
        if (negatives.Count > 0) groups.Add(Encode(negatives, null));
        if (extras.Count > 0) groups.Add(Encode(extras, null));
        return groups;
    }

    private EncodedText[] Encode(IReadOnlyList<string> texts, IReadOnlyList<string?>? instructions)
    {
        var rows = new EncodedText[texts.Count];
        for (int i = 0; i < texts.Count; i++)
            rows[i] = TextEncoding.Encode(_tokenizer, texts[i], instructions?[i], _options.MaxLength);
        return rows;
    }

    /// <summary>Prompt + candidate sequences for every candidate of every query (the positive first), right-padded.</summary>
    public GenerationBatch Generation(IReadOnlyList<TrainingExample> batch)
    {
        var rows = new List<TokenScoreRequest>();
        var rowsOfQuery = new List<List<int>>();
        var negativeIndexOfRow = new List<int>();
        int negIndex = 0;
        int prefixCount = _tokenizer.PrefixTokenIds.Count;
        for (int q = 0; q < batch.Count; q++)
        {
            var e = batch[q];
            var prompt = GenerationPrompt.EncodePrompt(_tokenizer, _options.BuildGenerationPrompt(e.Query, e.Instruction));
            var mine = new List<int>();
            var candidates = new List<string> { e.Positive };
            candidates.AddRange(e.Negatives);
            for (int c = 0; c < candidates.Count; c++)
            {
                var cand = _tokenizer.Encode(candidates[c], addSpecialTokens: false).ToArray();
                if (cand.Length == 0) throw new UllmeException($"The candidate text \"{candidates[c]}\" tokenizes to nothing.");
                mine.Add(rows.Count);
                negativeIndexOfRow.Add(c == 0 ? -1 : negIndex++);
                rows.Add(GenerationPrompt.Join(prompt, cand, prefixCount, _options.MaxGenerationLength));
            }
            rowsOfQuery.Add(mine);
        }
        return GenerationBatch.Create(rows, rowsOfQuery, negativeIndexOfRow, _model.PadTokenId, _model.Device);
    }
}
