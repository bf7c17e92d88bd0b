using TorchSharp;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training;

[Collection(TorchCollection.Name)]
public class ActivationCheckpointTests
{
    /// <summary>Three residual blocks with dropout over a frozen embedding, optionally checkpointed per block.</summary>
    private sealed class Stack : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.Embedding embed;
        private readonly TorchSharp.Modules.ModuleList<nn.Module<Tensor, Tensor>> blocks;
        private readonly nn.Module<Tensor, Tensor> dropout;
        public bool Checkpoint { get; set; }

        public Stack(double p) : base(nameof(Stack))
        {
            embed = nn.Embedding(9, 5, dtype: ScalarType.Float64);
            blocks = new(Enumerable.Range(0, 3).Select(_ => (nn.Module<Tensor, Tensor>)nn.Linear(5, 5, dtype: ScalarType.Float64)).ToArray());
            dropout = p > 0 ? nn.Dropout(p) : nn.Identity();
            RegisterComponents();
            embed.weight!.requires_grad = false;
        }

        public override Tensor forward(Tensor ids)
        {
            var h = embed.forward(ids);
            foreach (var block in blocks)
            {
                Tensor Block(Tensor x) => x + dropout.forward(block.forward(x).tanh());
                h = Checkpoint ? ActivationCheckpoint.Apply(Block, h) : Block(h);
            }
            return h;
        }
    }

    private static Dictionary<string, double[]> Run(Stack model, bool checkpoint, int seed)
    {
        using var scope = NewDisposeScope();
        model.zero_grad();
        model.Checkpoint = checkpoint;
        manual_seed(seed);
        var y = model.forward(tensor(new long[] { 1, 4, 2, 8, 0, 3 }).reshape(2, 3));
        (y.square().sum() + y.sum()).backward();
        return model.named_parameters().Where(p => p.parameter.requires_grad).ToDictionary(p => p.name, p => Data(p.parameter.grad!));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.4)]
    public void CheckpointedGradientsEqualPlainGradientsEvenWithDropoutAndAFrozenInput(double p)
    {
        manual_seed(1);
        using var model = new Stack(p);
        model.train();
        var plain = Run(model, checkpoint: false, seed: 5);
        var checkpointed = Run(model, checkpoint: true, seed: 5);
        Assert.Equal(6, plain.Count);
        foreach (var (name, g) in plain)
        {
            Assert.True(g.Any(v => v != 0), $"{name} got no gradient");
            Close(g, checkpointed[name], 1e-12, name);
        }
    }

    [Fact]
    public void WithoutGradItIsAPlainCall()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = ones(2, 2);
        var y = ActivationCheckpoint.Apply(t => t * 3, x);
        Assert.False(y.requires_grad);
        Assert.Equal(3f, y[0, 0].item<float>());
    }
}

[Collection(TorchCollection.Name)]
public class AutogradErrorTests
{
    [Fact]
    public void AnExceptionDuringRecomputationSurfacesInsteadOfCrashingTheProcess()
    {
        using var scope = NewDisposeScope();
        var w = ones(3, dtype: ScalarType.Float64).requires_grad_(true);
        int calls = 0;
        Tensor Block(Tensor x)
        {
            if (++calls == 2) throw new InvalidOperationException("layer input was disposed");
            return x * w;
        }
        var y = ActivationCheckpoint.Apply(Block, ones(3, dtype: ScalarType.Float64));
        y.sum().backward();   // the recomputation throws inside libtorch's backward
        var e = Assert.Throws<UllmeException>(AutogradErrors.ThrowIfAny);
        Assert.Contains("layer input was disposed", e.Message);
        AutogradErrors.ThrowIfAny();   // reported once
    }
}
