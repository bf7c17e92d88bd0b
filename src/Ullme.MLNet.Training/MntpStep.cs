using System.Globalization;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tokenization;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// One micro-batch of <see cref="TrainingStrategy.Mntp"/>: each example's query (its text) tokenized as inference
/// does, positions masked (<see cref="MaskedNextTokenLoss.Mask"/>), a forward in
/// <see cref="FineTuneOptions.EmbeddingAttention"/> mode, and the masked next-token loss back-propagated into the
/// weights. The loss is reported as <see cref="LossBreakdown.MaskedNextToken"/>.
/// </summary>
internal sealed class MntpStep : ITrainingStep
{
    private readonly UllmeModel _model;
    private readonly FineTuneOptions _options;
    private readonly PolicyForward _policy;
    private readonly MaskedNextTokenLoss _loss;

    public MntpStep(UllmeModel model, FineTuneOptions options, PolicyForward policy)
    {
        _model = model;
        _options = options;
        _policy = policy;
        var tokenizer = model.Tokenizer;
        var specials = new HashSet<int>(tokenizer.PrefixTokenIds.Concat(tokenizer.SuffixTokenIds)) { model.PadTokenId };
        foreach (var id in new[] { tokenizer.BosTokenId, tokenizer.EosTokenId, tokenizer.PadTokenId }) if (id is int i) specials.Add(i);
        int vocabulary = model.Config.VocabSize;
        _loss = new MaskedNextTokenLoss
        {
            MaskRatio = options.MaskRatio,
            MaskTokenId = ResolveMaskToken(tokenizer, options.MaskToken, vocabulary),
            VocabularySize = vocabulary,
            SpecialIds = specials,
        };
    }

    /// <summary>The id masked positions show.</summary>
    public int MaskTokenId => _loss.MaskTokenId;

    /// <summary>The id of <see cref="FineTuneOptions.MaskToken"/> (see there), or an error naming the option.</summary>
    internal static int ResolveMaskToken(ITextTokenizer tokenizer, string? token, int vocabulary)
    {
        const string option = "FineTuneOptions.MaskToken";
        int id;
        if (token is null)
        {
            id = tokenizer.UnkTokenId ?? tokenizer.EosTokenId
                ?? throw OptionCheck.Error(option, "has no default: the tokenizer has neither an unknown nor an end-of-sequence token; give a token id or a text that is one token");
        }
        else if (token is "unk" or "eos" or "pad")
        {
            id = (token switch { "unk" => tokenizer.UnkTokenId, "eos" => tokenizer.EosTokenId, _ => tokenizer.PadTokenId })
                ?? throw OptionCheck.Error(option, $"is '{token}', but the tokenizer has no such token");
        }
        else if (int.TryParse(token, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int parsed))
        {
            id = parsed;
        }
        else
        {
            var ids = tokenizer.Encode(token, addSpecialTokens: false);
            if (ids.Count != 1)
                throw OptionCheck.Error(option, $"is \"{token}\", which encodes to {ids.Count} tokens ({string.Join(", ", ids)}); give unk, eos, pad, a token id, or a text that is exactly one token");
            id = ids[0];
        }
        if (id < 0 || id >= vocabulary) throw OptionCheck.Error(option, $"is token id {id}, outside the model's vocabulary of {vocabulary}");
        return id;
    }

    public LossBreakdown Run(IReadOnlyList<TrainingExample> batch, int[]? indices, OptimizerStepper? stepper)
    {
        try
        {
            var rows = batch.Select(e => TextEncoding.Encode(_model.Tokenizer, e.Query, null, _options.MaxLength).Ids).ToList();
            var masked = _loss.Mask(rows);
            if (masked.Count == 0)
                throw new UllmeException("Strategy Mntp: no token of the batch can be masked (every text is special tokens only); give longer texts.");
            using var input = TokenBatch.Build(masked.InputIds.Select(EncodedText.FromIds).ToList(), _model.PadTokenId, _model.Device);
            using var original = TokenBatch.Build(rows.Select(EncodedText.FromIds).ToList(), _model.PadTokenId, _model.Device);
            long t = input.InputIds.shape[1];
            var flags = new bool[batch.Count * t];
            for (int r = 0; r < batch.Count; r++)
                for (int j = 0; j < masked.Predicted[r].Length; j++) flags[r * t + j] = masked.Predicted[r][j];
            using var predicted = tensor(flags, [batch.Count, t]).to(_model.Device);
            var hidden = _policy.Hidden(input.InputIds, input.AttentionMask, _options.EmbeddingAttention);
            var loss = MaskedNextTokenLoss.Compute(hidden, original.InputIds, predicted, _policy.LanguageModelLogits);
            double value = loss.to(ScalarType.Float64).item<double>();
            stepper?.BackwardPart(loss, "masked next-token loss");
            return new LossBreakdown(value, null, null, null, null) { MaskedNextToken = value };
        }
        finally
        {
            _policy.ReleaseLayerInputs();
        }
    }
}
