using System.Globalization;
using System.Runtime.CompilerServices;

namespace RetriKT.MLNet.Tests.Infrastructure;

/// <summary>
/// The tests run in the invariant culture whatever the machine's. They compare the library's messages and logs, which
/// interpolate numbers in the current culture, with invariant text: under LANG=de_DE.UTF-8 "StoreValidationShare is 0.1"
/// reads "0,1" and StoreValidationShareTests failed three tests (measured). Under LANG=C.UTF-8, as here and on CI, the
/// current culture already is the invariant one, so nothing changes there.
/// </summary>
internal static class InvariantCulture
{
#pragma warning disable CA2255 // a module initializer in a test assembly, on purpose: before any test or fixture runs
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Set()
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.DefaultThreadCurrentUICulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentUICulture = CultureInfo.InvariantCulture;
    }
}
