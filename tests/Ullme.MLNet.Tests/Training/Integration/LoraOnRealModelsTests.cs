using TorchSharp;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Lora;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training.Integration;

/// <summary>LoRA injected into the library's real backbones (decoder and BERT).</summary>
[Collection(TorchCollection.Name)]
public sealed class LoraOnRealModelsTests : SingleThreaded
{
    private static float[] Hidden(EmbeddingBackbone backbone, AttentionMode mode)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 1, 15, 40, 99, 7, 1, 300, 22, 0, 0 }).reshape(2, 5);
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 }).reshape(2, 5);
        var h = backbone.Forward(ids, mask, mode);
        return h.masked_fill(mask.unsqueeze(-1).eq(0), 0).cpu().data<float>().ToArray();
    }

    private static void RandomizeAdapters(nn.Module root)
    {
        manual_seed(3);
        using var _ = no_grad();
        foreach (var (_, layer) in LoraInjector.FindLayers(root)) layer.LoraB.normal_(0, 0.05);
    }

    private static double MaxDiff(float[] a, float[] b) => a.Zip(b).Max(p => Math.Abs(p.First - p.Second));

    [AssetFact]
    public void DecoderAdaptersUsePeftNamesAndMergeToTheSameOutput()
    {
        using var model = UllmeModel.Load(Assets.Stories260K);
        var backbone = model.Backbone;
        var baseOut = Hidden(backbone, AttentionMode.Causal);
        var adapted = LoraInjector.Apply(backbone, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 });
        Assert.Equal(5 * 7, adapted.Count);   // q, k, v, o, gate, up, down in 5 layers (tied head: no lm_head)
        var names = backbone.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", names);
        Assert.Contains("model.layers.0.self_attn.q_proj.lora_A.weight", names);
        Assert.Contains("model.layers.4.mlp.down_proj.lora_B.weight", names);
        Assert.Equal(names.Count(n => n.Contains(".lora_")), backbone.parameters().Count(p => p.requires_grad));

        Assert.Equal(0, MaxDiff(baseOut, Hidden(backbone, AttentionMode.Causal)));   // B = 0: unchanged
        RandomizeAdapters(backbone);
        var adaptedOut = Hidden(backbone, AttentionMode.Bidirectional);
        Assert.True(MaxDiff(Hidden(backbone, AttentionMode.Bidirectional), Hidden(backbone, AttentionMode.Bidirectional)) == 0);
        using (LoraInjector.Disabled(backbone))
            Assert.Equal(0, MaxDiff(baseOut, Hidden(backbone, AttentionMode.Causal)));
        LoraInjector.MergeAndUnload(backbone);
        Assert.DoesNotContain(backbone.named_parameters(), p => p.name.Contains(".lora_"));
        Assert.True(MaxDiff(adaptedOut, Hidden(backbone, AttentionMode.Bidirectional)) < 1e-5);
    }

    [Fact]
    public void BertAdaptersMergeToTheSameOutput()
    {
        using var model = UllmeModel.Load(UllmeModel.DefaultModelName);
        var backbone = model.Backbone;
        var adapted = LoraInjector.Apply(backbone, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 });
        Assert.Equal(6 * 6, adapted.Count);   // query, key, value, attention output, intermediate, output in 6 layers
        Assert.Contains(backbone.named_parameters(), p => p.name == "encoder.layer.0.attention.self.query.lora_A.weight");
        RandomizeAdapters(backbone);
        var adaptedOut = Hidden(backbone, AttentionMode.Bidirectional);
        LoraInjector.MergeAndUnload(backbone);
        Assert.True(MaxDiff(adaptedOut, Hidden(backbone, AttentionMode.Bidirectional)) < 1e-4);
    }
}
