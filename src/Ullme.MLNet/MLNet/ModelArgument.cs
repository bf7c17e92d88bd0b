using Microsoft.ML;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Transforms;

/// <summary>The settings every catalog entry point shares: which model, in which precision, on which device; a copy;
/// and the checks that run before anything is loaded. Implemented by the public options classes.</summary>
/// <typeparam name="TSelf">The options class itself (for <see cref="Clone"/>).</typeparam>
internal interface IModelOptions<TSelf>
{
    string Model { get; set; }

    ModelDType DType { get; set; }

    string? Device { get; set; }

    TSelf Clone();

    void Validate(bool modelIsLoaded = false);
}

/// <summary>
/// The argument checks of the catalog extensions (<c>UllmeEmbed</c>, <c>UllmeScore</c>, <c>UllmeGrlTrainer</c>): the
/// options overloads and the overloads taking an already loaded <see cref="UllmeModel"/> do the same thing for each
/// transform, so they do it here.
/// </summary>
internal static class ModelArgument
{
    /// <summary>The environment behind <paramref name="catalog"/>, after checking that neither argument is null.</summary>
    public static IHostEnvironment EnvironmentFor(TransformsCatalog catalog, object options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return MLNetInterop.GetEnvironment(catalog);
    }

    /// <summary>
    /// The environment behind <paramref name="catalog"/> and a copy of <paramref name="options"/> (defaults when null)
    /// whose <c>Model</c>, <c>DType</c> and <c>Device</c> describe the loaded <paramref name="model"/>, so that a saved
    /// pipeline records where it came from; the caller's object is not changed.
    /// </summary>
    public static (IHostEnvironment Env, TOptions Options) Bind<TOptions>(TransformsCatalog catalog, UllmeModel model, TOptions? options)
        where TOptions : class, IModelOptions<TOptions>, new()
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(model);
        var o = options?.Clone() ?? new TOptions();
        o.Model = model.SourceFolder;
        o.DType = model.LoadOptions.DType;
        o.Device = model.LoadOptions.Device;
        if (o is UllmeEmbeddingOptions embedding) embedding.Backend = model.Backend;
        return (MLNetInterop.GetEnvironment(catalog), o);
    }
}
