using System.Collections.Concurrent;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;

[assembly: LoadableClass(typeof(DisposalProbeTransformer), null, typeof(SignatureLoadModel),
    "Hosting test disposal probe", DisposalProbeTransformer.LoaderSignature)]
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Data")]

namespace System.Runtime.CompilerServices
{
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute(string assemblyName) : Attribute
    {
        public string AssemblyName { get; } = assemblyName;
    }
}

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure
{
    /// <summary>
    /// An identity transformer that is saved inside model.zip and counts, per loaded instance, how often it is disposed.
    /// Appended to a real classifier, it makes the pool's model disposal observable without mocking it: the pool
    /// disposes the loaded TransformerChain, which disposes its parts, this one included.
    /// </summary>
    public sealed class DisposalProbeTransformer : ITransformer, IDisposable
    {
        internal const string LoaderSignature = "HostingTestDisposalProbe";
        private static readonly ConcurrentQueue<DisposalProbeTransformer> Instances = new();
        private int _disposeCount;

        public DisposalProbeTransformer(string tag)
        {
            Tag = tag;
            Instances.Enqueue(this);
        }

        /// <summary>Saved in the model: tells which file (and which test) an instance was loaded from.</summary>
        public string Tag { get; }

        public int DisposeCount => Volatile.Read(ref _disposeCount);

        /// <summary>Every instance created with <paramref name="tag"/> (by training or by loading a model file).</summary>
        public static IReadOnlyList<DisposalProbeTransformer> WithTag(string tag) => Instances.Where(p => p.Tag == tag).ToList();

        public bool IsRowToRowMapper => true;

        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => inputSchema;

        public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new IdentityMapper(inputSchema);

        public IDataView Transform(IDataView input) => input;

        public void Dispose() => Interlocked.Increment(ref _disposeCount);

        void ICanSaveModel.Save(ModelSaveContext ctx)
        {
            ctx.CheckAtModel();
            ctx.SetVersionInfo(Version());
            ctx.Writer.Write(Tag);
        }

        private static DisposalProbeTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        {
            ctx.CheckAtModel(Version());
            return new DisposalProbeTransformer(ctx.Reader.ReadString());
        }

        private static VersionInfo Version() => new("DSPPROBE", 0x00010001, 0x00010001, 0x00010001,
            loaderAssemblyName: typeof(DisposalProbeTransformer).Assembly.FullName, loaderSignature: LoaderSignature);

        private sealed class IdentityMapper(DataViewSchema schema) : IRowToRowMapper
        {
            public DataViewSchema InputSchema => schema;
            public DataViewSchema OutputSchema => schema;

            public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns) => dependingColumns;

            public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns) => new ForwardingRow(input);
        }

        private sealed class ForwardingRow(DataViewRow input) : DataViewRow
        {
            public override long Position => input.Position;
            public override long Batch => input.Batch;
            public override DataViewSchema Schema => input.Schema;
            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => input.GetGetter<TValue>(column);
            public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();
            public override bool IsColumnActive(DataViewSchema.Column column) => input.IsColumnActive(column);

            protected override void Dispose(bool disposing)
            {
                if (disposing) input.Dispose();
            }
        }
    }
}
