// The ONE file that touches ML.NET internals (docs/mlnet.md, "ML.NET internals we touch").
//
// The library is compiled against publicized copies of Microsoft.ML.Core and Microsoft.ML.Data (build/
// Ullme.Publicizer.targets); at run time the real assemblies are loaded and the runtime skips access checks into them
// because of the two IgnoresAccessChecksTo attributes below. Everything else in the library uses public ML.NET API
// only; MLNetInteropTests scans our IL and fails if an internal ML.NET member is used outside this file, or if one
// we use no longer exists in the ML.NET that is loaded. At run time, Verify() JIT-compiles every method here once,
// so an incompatible ML.NET fails with one clear UllmeException instead of a MissingMethodException deep in a pipeline.

using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Transforms;

[assembly: IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: IgnoresAccessChecksTo("Microsoft.ML.Data")]

// Registers the transformer's loader with ML.NET's component catalog. ModelLoadContext records our assembly's name in
// every saved model and registers it on load, so mlContext.Model.Load needs no registration call, even in a new process.
[assembly: LoadableClass(typeof(UllmeEmbeddingTransformer), typeof(MLNetInterop.TransformerLoader), null,
    typeof(SignatureLoadModel), "Ullme Embedding Transform", MLNetInterop.LoaderSignature)]
[assembly: LoadableClass(typeof(UllmeScoreTransformer), typeof(MLNetInterop.ScoreTransformerLoader), null,
    typeof(SignatureLoadModel), "Ullme Score Transform", MLNetInterop.ScoreLoaderSignature)]

namespace System.Runtime.CompilerServices
{
    /// <summary>
    /// Tells the runtime to skip visibility checks when this assembly uses non-public members of the named assembly.
    /// The runtime recognises the attribute by name; the BCL does not ship it, so each assembly declares its own.
    /// </summary>
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute(string assemblyName) : Attribute
    {
        public string AssemblyName { get; } = assemblyName;
    }
}

namespace Ullme.MLNet.Transforms
{
    /// <summary>The context settings of an <see cref="MLContext"/> that the transform honours.</summary>
    internal readonly record struct MLContextSettings(int? Seed, int? GpuDeviceId, bool FallbackToCpu);

    /// <summary>
    /// Bridges to ML.NET internals: the environment behind a catalog, context settings, schema-shape columns, and the
    /// model save/load contexts. Keep every use of a non-public ML.NET member in this class.
    /// </summary>
    internal static class MLNetInterop
    {
        /// <summary>Loader signature written into every saved transformer (at most 24 ASCII characters).</summary>
        public const string LoaderSignature = "UllmeEmbeddingTransform";

        /// <summary>Loader signature of the score transformer.</summary>
        public const string ScoreLoaderSignature = "UllmeScoreTransform";

        /// <summary>Eight-character model signatures of our entries in the zip.</summary>
        private const string ModelSignature = "ULLMEEMB";
        private const string ScoreModelSignature = "ULLMESCR";

        /// <summary>ML.NET-level version of our entry's layout. Bump VerReadable only if old readers cannot read it;
        /// content changes are versioned by <see cref="UllmeModelPackage.FormatVersion"/> inside the manifest.</summary>
        private const uint VerWritten = 0x00010001;
        private const uint VerReadable = 0x00010001;
        private const uint VerWeCanReadBack = 0x00010001;

        /// <summary>Name of the stream holding the manifest, next to Model.key in the transformer's zip folder.</summary>
        public const string ManifestEntry = "Manifest.json";

        /// <summary>Folder (inside the transformer's zip folder) holding the model files.</summary>
        public const string FilesFolder = "Files";

        private static readonly Lazy<Exception?> Compatibility = new(CheckCompatibility);

        private static VersionInfo GetVersionInfo(PackageKind kind) => kind == PackageKind.Score
            ? new(ScoreModelSignature, VerWritten, VerReadable, VerWeCanReadBack,
                loaderAssemblyName: typeof(UllmeScoreTransformer).Assembly.FullName, loaderSignature: ScoreLoaderSignature)
            : new(ModelSignature, VerWritten, VerReadable, VerWeCanReadBack,
                loaderAssemblyName: typeof(UllmeEmbeddingTransformer).Assembly.FullName, loaderSignature: LoaderSignature);

        /// <summary>
        /// Throws one clear error if the ML.NET loaded in this process lacks an internal member this file uses
        /// (an ML.NET upgrade that moved it). Cheap after the first call.
        /// </summary>
        public static void Verify()
        {
            if (Compatibility.Value is { } ex)
                throw new UllmeException(
                    $"Ullme.MLNet's ML.NET integration was built against Microsoft.ML {BuiltAgainst} internals and does not work with the " +
                    $"Microsoft.ML.Core {typeof(IHostEnvironment).Assembly.GetName().Version} loaded in this process: {ex.Message}", ex);
        }

        /// <summary>The ML.NET version the interop was compiled against (informational).</summary>
        public const string BuiltAgainst = "5.0.1";

        // JIT-compiles every non-generic method of this class and its nested types: a member that no longer exists
        // (or is no longer accessible) in the loaded ML.NET fails here rather than at first use.
        private static Exception? CheckCompatibility()
        {
            var types = new[] { typeof(MLNetInterop) }.Concat(typeof(MLNetInterop).GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic));
            foreach (var type in types)
            {
                foreach (var m in type.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                {
                    if (m.IsAbstract || m.ContainsGenericParameters) continue;
                    try { RuntimeHelpers.PrepareMethod(m.MethodHandle); }
                    catch (Exception e) when (e is MissingMemberException or TypeLoadException or MemberAccessException or BadImageFormatException)
                    {
                        return new InvalidOperationException($"{type.Name}.{m.Name}: {e.GetType().Name}: {e.Message}", e);
                    }
                }
            }
            return null;
        }

        /// <summary>The host environment (the <see cref="MLContext"/>) behind a catalog.</summary>
        public static IHostEnvironment GetEnvironment(TransformsCatalog catalog)
        {
            Verify();
            return catalog.GetEnvironment();
        }

        /// <summary>Seed, GPU device and CPU fallback of the context (defaults when the environment is not an MLContext).</summary>
        public static MLContextSettings GetSettings(IHostEnvironment env) =>
            env is IHostEnvironmentInternal e ? new MLContextSettings(e.Seed, e.GpuDeviceId, e.FallbackToCpu) : new MLContextSettings(null, null, false);

        /// <summary>True once <c>MLContext.CancelExecution()</c> was called.</summary>
        public static bool IsCanceled(IHostEnvironment env) => env is ICancelable c && c.IsCanceled;

        /// <summary>
        /// The progress events ML.NET's tracker has collected from every progress channel of an <see cref="MLContext"/>
        /// since the last call (what ML.NET's console host prints): calculation name, event kind, and for checkpoints the
        /// metric values and progress units. Empty for environments that are not an MLContext.
        /// </summary>
        public static IReadOnlyList<(string Calculation, string Kind, double?[] Metrics, double?[] Units)> TakeProgressEvents(IHostEnvironment env)
        {
            Verify();
            if (env is not MLContext ml) return [];
            return ml._env.ProgressTracker.GetAllProgress()
                .Select(e => (e.Name, e.Kind.ToString(), e.ProgressEntry?.Metrics ?? [], e.ProgressEntry?.Progress ?? []))
                .ToList();
        }

        /// <summary>A schema-shape column for a known-size vector of <paramref name="itemType"/> (the constructor is internal).</summary>
        public static SchemaShape.Column VectorColumn(string name, DataViewType itemType) =>
            new(name, SchemaShape.Column.VectorKind.Vector, itemType, isKey: false);

        /// <summary>A schema-shape column for a scalar of <paramref name="itemType"/> (the constructor is internal).</summary>
        public static SchemaShape.Column ScalarColumn(string name, DataViewType itemType) =>
            new(name, SchemaShape.Column.VectorKind.Scalar, itemType, isKey: false);

        /// <summary>The schema shape of a concrete schema (what ML.NET's estimator chains pass to GetOutputSchema).</summary>
        public static SchemaShape ShapeOf(DataViewSchema schema) => SchemaShape.Create(schema);

        /// <summary>
        /// Writes the transformer into its folder of the model zip: version info, the manifest as its own stream, and
        /// each model file streamed from disk into <c>Files/&lt;relative path&gt;</c>.
        /// </summary>
        public static void Save(ModelSaveContext ctx, PackageKind kind, string manifestJson, IReadOnlyList<(string RelativePath, string FullPath)> files)
        {
            Verify();
            ArgumentNullException.ThrowIfNull(ctx);
            if (!ctx.InRepository)
                throw new UllmeException($"{(kind == PackageKind.Score ? nameof(UllmeScoreTransformer) : nameof(UllmeEmbeddingTransformer))} can only be saved into a model zip (mlContext.Model.Save), not into a single stream.");
            ctx.CheckAtModel();
            ctx.SetVersionInfo(GetVersionInfo(kind));
            // The main stream carries the manifest too, so a reader can tell our entry apart even if streams are lost.
            ctx.Writer.Write(manifestJson);
            ctx.SaveBinaryStream(ManifestEntry, w => w.Write(System.Text.Encoding.UTF8.GetBytes(manifestJson)));
            foreach (var (rel, full) in files)
            {
                ctx.SaveBinaryStream(FilesFolder + "/" + rel, w =>
                {
                    w.Flush();
                    using var src = File.OpenRead(full);
                    src.CopyTo(w.BaseStream, 1 << 20);
                });
            }
        }

        /// <summary>The loader ML.NET's component catalog calls (through <see cref="LoadableClassAttribute"/>).</summary>
        internal static class TransformerLoader
        {
            /// <summary>Re-creates a saved transformer: checks versions, reads the manifest, extracts and verifies the
            /// model files into a temporary folder, loads the model from there and deletes the folder.</summary>
            internal static UllmeEmbeddingTransformer Create(IHostEnvironment env, ModelLoadContext ctx) =>
                Restore(env, ctx, PackageKind.Embedding, (e, m, folder) => UllmeEmbeddingTransformer.LoadFromFolder(e, m.Options!, folder, m.ModelId));
        }

        /// <summary>The score transformer's loader (see <see cref="TransformerLoader"/>).</summary>
        internal static class ScoreTransformerLoader
        {
            internal static UllmeScoreTransformer Create(IHostEnvironment env, ModelLoadContext ctx) =>
                Restore(env, ctx, PackageKind.Score, (e, m, folder) => UllmeScoreTransformer.LoadFromFolder(e, m.ScoreOptions!, folder, m.ModelId));
        }

        private static T Restore<T>(IHostEnvironment env, ModelLoadContext ctx, PackageKind kind,
            Func<IHostEnvironment, UllmeModelPackage.Manifest, string, T> create) where T : IPackagedTransformer
        {
            Verify();
            ArgumentNullException.ThrowIfNull(env);
            ArgumentNullException.ThrowIfNull(ctx);
            CheckHeader(ctx, kind);
            ctx.CheckAtModel(GetVersionInfo(kind));
            string mainManifest = ctx.Reader.ReadString();

            // Our entries are read straight from ML.NET's zip reader rather than through TryLoadBinaryStream, which
            // extracts each entry whole into ML.NET's temporary folder before the caller sees a byte (a zip bomb would
            // fill the disk there): UllmeModelPackage checks the declared sizes first and caps every copy.
            var source = new ZipPackageSource(ctx);
            string manifest = UllmeModelPackage.ReadManifestEntry(source) ?? mainManifest;
            string? tempRoot = env is IHostEnvironmentInternal e ? e.TempFilePath : null;
            return UllmeModelPackage.Restore(env, kind, manifest, source, tempRoot, create);
        }

        /// <summary>The entries of the transformer's folder in the zip being loaded, from ML.NET's
        /// <c>RepositoryReader</c> (its entry map, normalised the way its <c>OpenEntryOrNull</c> looks entries up).</summary>
        private sealed class ZipPackageSource(ModelLoadContext ctx) : IPackageSource
        {
            public PackageEntry? Find(string relativePath)
            {
                var repository = ctx.Repository
                    ?? throw new UllmeException("An Ullme transformer can only be loaded from a model zip (mlContext.Model.Load), not from a single stream.");
                string path = Path.Combine(ctx.Directory ?? "", relativePath).Replace('/', Path.DirectorySeparatorChar);
                if (!repository._entries.TryGetValue(path, out var entry) && !repository._entries.TryGetValue(path.Replace("/", "\\"), out entry))
                    return null;
                return new PackageEntry(entry.Length, entry.CompressedLength, entry.Open);
            }
        }

        private static void CheckHeader(ModelLoadContext ctx, PackageKind kind)
        {
            var expected = GetVersionInfo(kind);
            if (ctx.Header.ModelSignature != expected.ModelSignature)
                throw new UllmeException($"Model zip entry '{ctx.Directory}' is not an Ullme {(kind == PackageKind.Score ? "score" : "embedding")} transformer (wrong signature): the zip is corrupted.");
            if (ctx.Header.ModelVerReadable > VerWritten)
                throw new UllmeException(
                    $"Model zip entry '{ctx.Directory}' was written by a newer Ullme.MLNet (entry version 0x{ctx.Header.ModelVerReadable:X8}; " +
                    $"this version reads up to 0x{VerWritten:X8}). Upgrade Ullme.MLNet to load it.");
        }
    }
}
