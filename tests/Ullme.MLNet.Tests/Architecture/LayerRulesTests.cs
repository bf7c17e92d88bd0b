using System.Reflection;
using ArchUnitNET.Domain;
using ArchUnitNET.Loader;
using ArchUnitNET.xUnit;
using static ArchUnitNET.Fluent.ArchRuleDefinition;
using ArchAssembly = System.Reflection.Assembly;

namespace Ullme.MLNet.Tests.Architecture;

/// <summary>
/// The layer rules of docs/architecture.md, checked on the compiled assemblies (ArchUnitNET reads their IL, so a
/// dependency through a field, a signature, a call or a generic argument counts): the engine references no training,
/// evaluation or ML.NET code; inference references no training code; only the ML.NET project references ML.NET
/// (assemblies <c>Microsoft.ML*</c>, except <c>Microsoft.ML.Tokenizers</c>); the server and the Extensions.AI adapter
/// reference no training. <see cref="ProjectReferenceTests"/> pins each project's references.
/// </summary>
public sealed class LayerRulesTests
{
    private static readonly ArchAssembly Core = typeof(UllmeException).Assembly;
    private static readonly ArchAssembly DefaultModel = typeof(Ullme.MLNet.Inference.DefaultModel).Assembly;
    private static readonly ArchAssembly Evaluation = typeof(Ullme.MLNet.Evaluation.UllmeEvaluation).Assembly;
    private static readonly ArchAssembly Training = typeof(Ullme.MLNet.Training.UllmeFineTuner).Assembly;
    private static readonly ArchAssembly MLNet = typeof(Ullme.MLNet.Transforms.UllmeEmbeddingTransformer).Assembly;
    private static readonly ArchAssembly ExtensionsAI = typeof(Ullme.MLNet.Extensions.AI.UllmeEmbeddingGenerator).Assembly;
    private static readonly ArchAssembly Server = typeof(Ullme.MLNet.Server.UllmeServer).Assembly;
    private static readonly ArchAssembly Cli = typeof(Ullme.Cli.UllmeCli).Assembly;
    private static readonly ArchAssembly Onnx = typeof(Ullme.MLNet.Onnx.UllmeOnnx).Assembly;
    private static readonly ArchAssembly Orleans = typeof(Ullme.MLNet.Orleans.Client.UllmeCluster).Assembly;

    private static readonly ArchUnitNET.Domain.Architecture Ours =
        new ArchLoader().LoadAssemblies(Core, DefaultModel, Evaluation, Training, MLNet, ExtensionsAI, Server, Cli, Onnx, Orleans).Build();

    /// <summary>ML.NET's assemblies (Microsoft.ML, Microsoft.ML.Core, .Data, .StandardTrainers, ...), not the tokenizers
    /// nor ONNX Runtime (Microsoft.ML.OnnxRuntime, which the ONNX backend uses without ML.NET).</summary>
    internal const string MLNetAssemblies = @"^Microsoft\.ML(\.(?!Tokenizers\b|OnnxRuntime\b)[A-Za-z0-9.]+)?,";

    private static string Exactly(ArchAssembly assembly) => "^" + System.Text.RegularExpressions.Regex.Escape(assembly.GetName().Name!) + ",";

    [Fact]
    public void The_engine_references_no_training_evaluation_or_MLNet_code()
    {
        foreach (var other in new[] { Training, Evaluation, MLNet, DefaultModel, ExtensionsAI, Server, Cli, Onnx, Orleans })
            Types().That().ResideInAssembly(Core).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(Exactly(other))
                .Because($"the engine ({Core.GetName().Name}) is the bottom layer").Check(Ours);
        Types().That().ResideInAssembly(Core).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(MLNetAssemblies)
            .Because("only the ML.NET surface references ML.NET").Check(Ours);
        Types().That().ResideInAssembly(Core).Should().NotDependOnAnyTypesThat()
            .ResideInNamespaceMatching(@"^Ullme\.MLNet\.(Training|Evaluation|Transforms)(\..*)?$")
            .Because("the engine holds no training, evaluation or ML.NET code").Check(Ours);
    }

    [Fact]
    public void The_ONNX_backend_sits_on_the_engine_alone()
    {
        foreach (var other in new[] { Training, Evaluation, MLNet, DefaultModel, ExtensionsAI, Server, Cli })
            Types().That().ResideInAssembly(Onnx).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(Exactly(other))
                .Because($"{Onnx.GetName().Name} exports and runs the engine's models and nothing else").Check(Ours);
        Types().That().ResideInAssembly(Core).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(@"^Microsoft\.ML\.OnnxRuntime")
            .Because("the engine finds the ONNX backend by name (OnnxBackendLocator) and never needs ONNX Runtime itself").Check(Ours);
    }

    [Fact]
    public void The_Orleans_cluster_sits_on_the_engine_alone_and_nothing_but_the_CLI_uses_it()
    {
        foreach (var other in new[] { Training, Evaluation, MLNet, DefaultModel, ExtensionsAI, Server, Cli, Onnx })
            Types().That().ResideInAssembly(Orleans).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(Exactly(other))
                .Because($"{Orleans.GetName().Name} embeds corpora with the engine's models and nothing else").Check(Ours);
        foreach (var user in new[] { Core, DefaultModel, Evaluation, Training, MLNet, ExtensionsAI, Server, Onnx })
            Types().That().ResideInAssembly(user).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(@"^(Orleans\.|Microsoft\.Orleans)")
                .Because("only applications that run a cluster carry Orleans").Check(Ours);
    }

    [Fact]
    public void The_MLNet_surface_finds_the_ONNX_backend_by_name()
    {
        Types().That().ResideInAssembly(MLNet).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(Exactly(Onnx))
            .Because("an ML.NET user who never asks for ONNX Runtime must not carry its natives; Backend = OnnxRuntime loads Ullme.MLNet.Onnx by name").Check(Ours);
    }

    [Fact]
    public void Inference_references_no_training_code()
    {
        Types().That().ResideInNamespaceMatching(@"^Ullme\.MLNet\.Inference(\..*)?$").Should().NotDependOnAnyTypesThat()
            .ResideInNamespaceMatching(@"^Ullme\.MLNet\.Training(\..*)?$")
            .Because("inference (embedding, scoring) is used without training").Check(Ours);
        Types().That().ResideInNamespaceMatching(@"^Ullme\.MLNet\.Inference(\..*)?$").Should().NotDependOnAnyTypesThat()
            .ResideInAssemblyMatching(Exactly(Training)).Check(Ours);
    }

    [Fact]
    public void Only_the_MLNet_project_references_MLNet()
    {
        Types().That().DoNotResideInAssembly(MLNet).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(MLNetAssemblies)
            .Because($"{MLNet.GetName().Name} is the only project that references Microsoft.ML").Check(Ours);
    }

    [Fact]
    public void The_server_and_ExtensionsAI_reference_no_training()
    {
        foreach (var surface in new[] { Server, ExtensionsAI })
        {
            Types().That().ResideInAssembly(surface).Should().NotDependOnAnyTypesThat().ResideInAssemblyMatching(Exactly(Training))
                .Because("serving and IEmbeddingGenerator run without the trainer").Check(Ours);
            Types().That().ResideInAssembly(surface).Should().NotDependOnAnyTypesThat()
                .ResideInNamespaceMatching(@"^Ullme\.MLNet\.Training(\..*)?$").Check(Ours);
        }
    }

    /// <summary>The rules above are only as good as what the loader sees: ML.NET types must be visible as such, or
    /// "depends on nothing in Microsoft.ML*" would hold for any code.</summary>
    [Fact]
    public void The_rules_see_real_dependencies()
    {
        Assert.Contains(TypesOf(MLNet), t => DependsOn(t, MLNetAssemblies));
        Assert.Contains(TypesOf(Cli), t => DependsOn(t, Exactly(Training)));
        Assert.Contains(TypesOf(Core), t => DependsOn(t, @"^Microsoft\.ML\.Tokenizers,"));
        Assert.DoesNotContain(TypesOf(Core), t => DependsOn(t, MLNetAssemblies));   // the tokenizers are not "ML.NET"
    }

    private static IEnumerable<IType> TypesOf(ArchAssembly assembly) =>
        Ours.Types.Where(t => t.Assembly.FullName == assembly.FullName);

    private static bool DependsOn(IType type, string assemblyPattern) =>
        type.Dependencies.Any(d => System.Text.RegularExpressions.Regex.IsMatch(d.Target.Assembly?.FullName ?? "", assemblyPattern));
}
