using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Text;

// One registration per persisted component. ML.NET finds these by the loader signature stored in model.zip and
// calls the matching static Create below (the LoadableClass "loader type" is this class, so components themselves
// never see ModelLoadContext).
[assembly: LoadableClass(typeof(TextTokenizingTransformer), typeof(Loaders), null, typeof(SignatureLoadModel),
    "RetriKT Text Tokenizer", "RetriKTTextTokenizer")]
[assembly: LoadableClass(typeof(RetriKT.MLNet.Student.RetrievalClassifierTransformer), typeof(RetrievalClassifierLoader), null, typeof(SignatureLoadModel),
    "RetriKT Retrieval Classifier", "RetriKTRetrievalClsf")]

namespace RetriKT.MLNet.Bridge;

/// <summary>Static factories ML.NET's component catalog calls to restore our transformers from model.zip.</summary>
internal static class Loaders
{
    private static TextTokenizingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => TextTokenizingTransformer.Load(ModelReader.Open(env, ctx, TextTokenizingTransformer.Format));
}

/// <summary>
/// ML.NET finds a loader by a static method named <c>Create(IHostEnvironment, ModelLoadContext)</c>; C# cannot overload
/// by return type, so each further component gets its own small loader class.
/// </summary>
internal static class RetrievalClassifierLoader
{
    private static RetriKT.MLNet.Student.RetrievalClassifierTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => RetriKT.MLNet.Student.RetrievalClassifierTransformer.Load(ModelReader.Open(env, ctx, RetriKT.MLNet.Student.RetrievalClassifierTransformer.Format));
}
