using System.Collections.Concurrent;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

[assembly: LoadableClass(typeof(SlowLoadTransformer), null, typeof(SignatureLoadModel),
    "Hosting test slow load", SlowLoadTransformer.LoaderSignature)]

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure
{
    /// <summary>An identity transformer saved in model.zip whose loading takes <see cref="DelayMs"/> (a big model) and
    /// signals <see cref="LoadStarted"/> for its tag when it begins.</summary>
    public sealed class SlowLoadTransformer(string tag, int delayMs) : ITransformer
    {
        internal const string LoaderSignature = "HostingTestSlowLoad";
        private static readonly ConcurrentDictionary<string, ManualResetEventSlim> Started = new();

        public string Tag { get; } = tag;
        public int DelayMs { get; } = delayMs;

        public static ManualResetEventSlim LoadStarted(string tag) => Started.GetOrAdd(tag, _ => new ManualResetEventSlim());

        public bool IsRowToRowMapper => true;
        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => inputSchema;
        public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new DisposalProbeTransformer("slow-load-inner").GetRowToRowMapper(inputSchema);
        public IDataView Transform(IDataView input) => input;

        void ICanSaveModel.Save(ModelSaveContext ctx)
        {
            ctx.CheckAtModel();
            ctx.SetVersionInfo(Version());
            ctx.Writer.Write(Tag);
            ctx.Writer.Write(DelayMs);
        }

        private static SlowLoadTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        {
            ctx.CheckAtModel(Version());
            var loaded = new SlowLoadTransformer(ctx.Reader.ReadString(), ctx.Reader.ReadInt32());
            LoadStarted(loaded.Tag).Set();
            Thread.Sleep(loaded.DelayMs);
            return loaded;
        }

        private static VersionInfo Version() => new("SLOWLOAD", 0x00010001, 0x00010001, 0x00010001,
            loaderAssemblyName: typeof(SlowLoadTransformer).Assembly.FullName, loaderSignature: LoaderSignature);
    }
}

namespace RetriKT.MLNet.Hosting.Tests
{
    /// <summary>A model file replaced while the loader is still loading the first one.</summary>
    public class FileReplacedDuringStartTests
    {
        [SharedDataFact]
        public async Task AFileRenamedIntoPlaceWhileTheFirstModelLoads_IsPickedUp()
        {
            using var dir = new TempDir();
            var (v1, v2) = TestModels.Save(dir.Path, "replaced-at-start");
            var answers2 = TestModels.SequentialAnswers(v2);
            var ml = new MLContext(0);
            var slowV1 = dir.File("slow-v1.zip");
            var tag = $"slow-load-{Guid.NewGuid():N}";
            ml.Model.Save(new TransformerChain<ITransformer>(ml.Model.Load(v1, out var schema), new SlowLoadTransformer(tag, 2500)), schema, slowV1);
            var modelPath = dir.File("model.zip");
            File.Copy(slowV1, modelPath);

            using var host = new PoolHost(b => b.FromFile(modelPath));
            var creating = Task.Run(() => host.Pool);
            Assert.True(SlowLoadTransformer.LoadStarted(tag).Wait(TimeSpan.FromSeconds(15)), "the model did not start loading");
            TestModels.DeployByRename(v2, modelPath);   // a deployment lands while the first model (a big one) loads
            var pool = await creating;

            var text = TestModels.Sentences[0];
            Assert.True(Wait.Until(() =>
            {
                var p = pool.Predict(new TextInput { Text = text });
                return answers2[text].Matches(p.PredictedLabel, p.Score);
            }, TimeSpan.FromSeconds(5)), $"model.zip holds v2, but the pool still serves the file it started loading (generation {pool.GetModelGeneration()}, health: '{pool.GetLastLoadError() ?? "healthy"}')");
        }
    }
}
