using System.Collections.Concurrent;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;

[assembly: LoadableClass(typeof(SlowModelTransformer), null, typeof(SignatureLoadModel),
    "Hosting test slow model", SlowModelTransformer.LoaderSignature)]

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure;

/// <summary>
/// An identity transformer saved in model.zip that stands for a big model: its loading takes <see cref="LoadDelayMs"/>
/// (signalling <see cref="LoadStarted"/> for its tag when it begins) and creating its engine <see cref="EngineDelayMs"/>.
/// </summary>
public sealed class SlowModelTransformer(string tag, int loadDelayMs, int engineDelayMs) : ITransformer
{
    internal const string LoaderSignature = "HostingTestSlowModel";
    private static readonly ConcurrentDictionary<string, ManualResetEventSlim> Started = new();

    public string Tag { get; } = tag;
    public int LoadDelayMs { get; } = loadDelayMs;
    public int EngineDelayMs { get; } = engineDelayMs;

    public static ManualResetEventSlim LoadStarted(string tag) => Started.GetOrAdd(tag, _ => new ManualResetEventSlim());

    public bool IsRowToRowMapper => true;
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => inputSchema;

    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        Thread.Sleep(EngineDelayMs);
        return new DisposalProbeTransformer($"{Tag}-inner").GetRowToRowMapper(inputSchema);
    }

    public IDataView Transform(IDataView input) => input;

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ctx.CheckAtModel();
        ctx.SetVersionInfo(Version());
        ctx.Writer.Write(Tag);
        ctx.Writer.Write(LoadDelayMs);
        ctx.Writer.Write(EngineDelayMs);
    }

    private static SlowModelTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(Version());
        var loaded = new SlowModelTransformer(ctx.Reader.ReadString(), ctx.Reader.ReadInt32(), ctx.Reader.ReadInt32());
        LoadStarted(loaded.Tag).Set();
        Thread.Sleep(loaded.LoadDelayMs);
        return loaded;
    }

    private static VersionInfo Version() => new("SLOWMODL", 0x00010001, 0x00010001, 0x00010001,
        loaderAssemblyName: typeof(SlowModelTransformer).Assembly.FullName, loaderSignature: LoaderSignature);
}
