using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Text;

// One registration per persisted component. ML.NET finds these by the loader signature stored in model.zip and
// calls the matching static Create below (the LoadableClass "loader type" is this class, so components themselves
// never see ModelLoadContext).
[assembly: LoadableClass(typeof(TextTokenizingTransformer), typeof(Loaders), null, typeof(SignatureLoadModel),
    "RetriKT Text Tokenizer", "RetriKTTextTokenizer")]
[assembly: LoadableClass(typeof(RetriKT.MLNet.Student.RetrievalClassifierTransformer), typeof(Loaders), null, typeof(SignatureLoadModel),
    "RetriKT Retrieval Classifier", "RetriKTRetrievalClassifier")]

namespace RetriKT.MLNet.Bridge;

/// <summary>Static factories ML.NET's component catalog calls to restore our transformers from model.zip.</summary>
internal static class Loaders
{
    private static TextTokenizingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => TextTokenizingTransformer.Load(ModelReader.Open(env, ctx, TextTokenizingTransformer.Format));

    private static RetriKT.MLNet.Student.RetrievalClassifierTransformer CreateRetrievalClassifier(IHostEnvironment env, ModelLoadContext ctx)
        => RetriKT.MLNet.Student.RetrievalClassifierTransformer.Load(ModelReader.Open(env, ctx, RetriKT.MLNet.Student.RetrievalClassifierTransformer.Format));
}
